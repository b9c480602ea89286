-- session_create: write a new live session record unless one exists (sessions/store.py).
-- KEYS[1] = {a:ACC}:s:SID    the session record hash
-- KEYS[2] = {a:ACC}:live     live session ids of the account
-- ARGV[1] = ttl_s             record and live-set TTL
-- ARGV[2] = session id
-- ARGV[3..] = field, value pairs of the record
-- Returns 1 when created, 0 when a record exists (replayed authorize, reused id).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
