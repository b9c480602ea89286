-- update: change account settings (credit limit, tariff, max calls, currency,
-- identities, mode); re-applies the postpaid credit rule.
-- KEYS[1] acct hash   KEYS[2] audit stream
-- ARGV[1] now ms  ARGV[2] who  ARGV[3] why  ARGV[4] audit max entries
-- ARGV[5] identities expected now ('' unless identities change: guards concurrent moves)
-- ARGV[6..] field, value pairs among the fields above
-- Returns {'ok'} | {'unknown'} | {'identities_changed'} | {'currency_in_use'}
--   | {'prepaid_credit_limit', limit}: a change of mode or limit would leave a prepaid
--     account with a credit limit it never spends (one stored before takes other changes;
--     a change to prepaid that names no limit sets it to 0, in the audit entry too)
local acct, stream = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local a = redis.call('HMGET', acct, 'mode', 'status', 'status_reason', 'balance',
                     'credit_limit', 'reserved', 'identities', 'currency')
if not a[1] then return {'unknown'} end
local new, extra = {}, {}
for i = 6, #ARGV, 2 do
  new[ARGV[i]] = ARGV[i + 1]
  extra[#extra + 1] = ARGV[i]; extra[#extra + 1] = ARGV[i + 1]
  local old = redis.call('HGET', acct, ARGV[i]) or ''
  extra[#extra + 1] = 'old.' .. ARGV[i]; extra[#extra + 1] = old
end
if new.identities and a[7] ~= ARGV[5] then return {'identities_changed'} end
if new.currency and new.currency ~= a[8] and (num(a[4]) ~= 0 or num(a[6]) ~= 0) then
  return {'currency_in_use'}
end
local before = snapshot(acct)
-- A change to prepaid that names no limit takes the limit away with it (a prepaid
-- account spends its balance only); one that names a limit above 0 is refused.
local cleared = new.mode == 'prepaid' and not new.credit_limit and num(a[5]) ~= 0
if cleared then
  new.credit_limit = '0'
  extra[#extra + 1] = 'credit_limit'; extra[#extra + 1] = '0'
  extra[#extra + 1] = 'old.credit_limit'; extra[#extra + 1] = a[5]
end
local mode, credit_limit = new.mode or a[1], num(new.credit_limit or a[5])
if (new.mode or new.credit_limit) and mode == 'prepaid' and credit_limit > 0 then
  return {'prepaid_credit_limit', s(credit_limit)}
end
local status, reason = credit_rule(mode, a[2], a[3], num(a[4]), credit_limit)
local args = {acct, 'status', status, 'status_reason', reason, 'updated_ms', s(now)}
for i = 6, #ARGV do args[#args + 1] = ARGV[i] end
if cleared then args[#args + 1] = 'credit_limit'; args[#args + 1] = '0' end
redis.call('HSET', unpack(args))
audit(stream, ARGV[4], now, ARGV[2], 'update', ARGV[3], before, snapshot(acct), extra)
return {'ok'}
