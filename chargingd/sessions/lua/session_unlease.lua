-- session_unlease: give back a close lease, only if this caller still holds it
-- (sessions/store.py release_close; another closer's lease is left alone).
-- KEYS[1] {a:ACC}:s:SID:fin   ARGV[1] the caller's lease token
-- Returns 1 when it was given back, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
