-- session_unlocate: drop a call's locator field, only if it still names this account
-- (sessions/store.py: a close, an authorize undone, a record found gone). Session ids
-- may collide across gateways: the field may be another account's live call now.
-- KEYS[1] sess:locs:N   ARGV[1] session id   ARGV[2] account id
-- Returns 1 when dropped, 0 otherwise.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
