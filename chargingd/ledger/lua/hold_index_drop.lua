-- hold_index_drop: forget an account in the global index of accounts with holds, only if
-- no reserve raised its visit time since the sweeper read it (ZADD GT only raises it).
-- KEYS[1] hold index zset   ARGV[1] account id   ARGV[2] visit time the sweeper read
-- Returns 1 if removed.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
