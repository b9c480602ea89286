-- Admit a gateway or destination group name into the KPI windows, up to a cap.
-- KEYS[1]  set of the names admitted for one dimension (kpi:groups:DIM)
-- ARGV[1]  the name
-- ARGV[2]  the cap (monitoring.max_groups)
-- ARGV[3]  TTL of the set in seconds, renewed when a name is added
-- Returns 1 when the name is (now) admitted, 0 when the cap is reached: the caller
-- counts that group's calls under "other".
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 1
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
