-- session_unlocate: drop a call's locator fields, only where they still name this
-- account (sessions/indexes.py: a close, an authorize undone, a record found gone).
-- Session ids may collide across gateways: a field may be another account's live call.
-- KEYS[1..] the call's locator shards: sess:lc:N, and on a single Redis also the
--   older daemons' sess:locs:N (sessions/shards.py; Redis Cluster: one key a call,
--   their slots differ)
-- ARGV[1] session id   ARGV[2] account id
-- Returns how many were dropped.
local n = 0
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], ARGV[1]) == ARGV[2] then
    n = n + redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
return n
