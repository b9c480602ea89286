-- status: operator sets an account's status (reason "operator"; active clears it).
-- The postpaid credit rule still applies to an account set active below its floor.
-- KEYS[1] acct hash   KEYS[2] audit stream
-- ARGV[1] status  ARGV[2] now ms  ARGV[3] who  ARGV[4] why  ARGV[5] audit max entries
-- Returns {'ok'} | {'unknown'}
local acct, stream = KEYS[1], KEYS[2]
local now = tonumber(ARGV[2])
local a = redis.call('HMGET', acct, 'mode', 'balance', 'credit_limit')
if not a[1] then return {'unknown'} end
local before = snapshot(acct)
local status, reason = ARGV[1], 'operator'
if status == 'active' then
  status, reason = credit_rule(a[1], 'active', '', num(a[2]), num(a[3]))
end
redis.call('HSET', acct, 'status', status, 'status_reason', reason, 'updated_ms', s(now))
audit(stream, ARGV[5], now, ARGV[3], 'status', ARGV[4], before, snapshot(acct), {})
return {'ok'}
