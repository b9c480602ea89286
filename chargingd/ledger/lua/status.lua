-- status: set an account's status (suspend/resume/block/close), by an operator or by a
-- rule such as dunning. The postpaid credit rule still applies to an account set
-- active below its floor. Embeddable (ledger/steps.py: ledger_status(KEYS, ARGV)): a
-- fraud rule blocks an account in the script that decided it (chargingd/fraud).
-- KEYS[1] acct hash   KEYS[2] audit stream
-- ARGV[1] status  ARGV[2] now ms  ARGV[3] who  ARGV[4] why  ARGV[5] audit max entries
-- ARGV[6] status_reason of a non-active status ('' = 'operator')
-- ARGV[7] '' or the current "status/reason" values allowed, comma separated (for example
--         'suspended/dunning'): an automatic change never overrides an operator's
-- Returns {'ok'} | {'unknown'} | {'skipped'} (current status not among ARGV[7])
local acct, stream = KEYS[1], KEYS[2]
local now = tonumber(ARGV[2])
local a = redis.call('HMGET', acct, 'mode', 'balance', 'credit_limit', 'status', 'status_reason')
if not a[1] then return {'unknown'} end
if ARGV[7] and ARGV[7] ~= '' then
  local current = ',' .. (a[4] or '') .. '/' .. (a[5] or '') .. ','
  if not string.find(',' .. ARGV[7] .. ',', current, 1, true) then return {'skipped'} end
end
local before = snapshot(acct)
local status, reason = ARGV[1], 'operator'
if ARGV[6] and ARGV[6] ~= '' then reason = ARGV[6] end
if status == 'active' then
  status, reason = credit_rule(a[1], 'active', '', num(a[2]), num(a[3]))
end
redis.call('HSET', acct, 'status', status, 'status_reason', reason, 'updated_ms', s(now))
audit(stream, ARGV[5], now, ARGV[3], 'status', ARGV[4], before, snapshot(acct), {})
return {'ok'}
