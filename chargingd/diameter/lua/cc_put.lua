-- The state of a Credit-Control session after an answered CCR (diameter/ccstate.py),
-- written only when it is not older than the stored one.
-- KEYS[1]  dia:cc:SESSION
-- ARGV[1]  its CC-Request-Number   ARGV[2]  TTL in seconds
-- ARGV[3..] field, value, ...      (n, u, d, a, e, g)
-- Returns 1 when written, 0 when a newer request was answered meanwhile (by another
-- process the client failed over to, RFC 4006 §5.1): that state stays.
local stored = redis.call('HMGET', KEYS[1], 'n', 'e')
local number = tonumber(ARGV[1])
if stored[1] then
  local last = tonumber(stored[1])
  if last > number or (last == number and stored[2] == '1') then
    return 0
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
