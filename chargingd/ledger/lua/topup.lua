-- topup: a top-up (amount > 0) or a signed adjustment, idempotent on its transaction id.
-- KEYS[1] acct hash   KEYS[2] txn hash (remembers kind, amount, result)
-- KEYS[3] audit stream   KEYS[4] leases zset
-- ARGV[1] kind topup|adjust  ARGV[2] amount micros  ARGV[3] currency or ''  ARGV[4] now ms
-- ARGV[5] who  ARGV[6] why  ARGV[7] txn id  ARGV[8] audit max entries  ARGV[9] txn ttl ms
-- ARGV[10] allow_debt 0|1: a negative adjustment may take more than is available
-- (balance - live holds - floor; floor 0 prepaid, -credit_limit postpaid) only with it:
-- holds stay backed, and a debt comes from real usage only.
-- Returns {'ok'|'replay', result json} | {'unknown'} | {'duplicate'} | {'currency', cur}
--       | {'closed'} | {'debt', available} | {'range'}
local acct, txn, stream, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local kind, amount, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local a = redis.call('HMGET', acct, 'mode', 'status', 'status_reason', 'balance',
                     'credit_limit', 'currency', 'topups', 'debits', 'reserved')
if not a[1] then return {'unknown'} end
local prev = redis.call('HMGET', txn, 'kind', 'amount', 'result')
if prev[1] then
  if prev[1] == kind and prev[2] == ARGV[2] then return {'replay', prev[3]} end
  return {'duplicate'}
end
if ARGV[3] ~= '' and ARGV[3] ~= a[6] then return {'currency', a[6]} end
if a[2] == 'closed' then return {'closed'} end

local balance = num(a[4]) + amount
local floor = credit_floor(a[1], num(a[5]))
local available = num(a[4]) - num(a[9]) - floor
if amount < 0 and -amount > available and ARGV[10] ~= '1' then
  if available < 0 then available = 0 end
  return {'debt', available}
end
local topups, debits = num(a[7]), num(a[8])
if amount > 0 then topups = topups + amount else debits = debits - amount end
-- Lua numbers are doubles: keep balance and lifetime totals exact (well below 2^53).
if math.abs(balance) > MAX_TOTAL_MICROS or topups > MAX_TOTAL_MICROS
   or debits > MAX_TOTAL_MICROS then
  return {'range'}
end
local before = snapshot(acct)
local status, reason = credit_rule(a[1], a[2], a[3], balance, num(a[5]))
redis.call('HSET', acct, 'balance', s(balance), 'topups', s(topups), 'debits', s(debits),
           'status', status, 'status_reason', reason, 'updated_ms', s(now))
journal(acct, now, kind, amount, ARGV[7], '', ARGV[5], ARGV[6])
audit(stream, ARGV[8], now, ARGV[5], kind, ARGV[6], before, snapshot(acct),
      {'txn', ARGV[7], 'amount', ARGV[2]})
local result = cjson.encode({redis.call('HGETALL', acct), redis.call('ZCARD', leases)})
redis.call('HSET', txn, 'kind', kind, 'amount', ARGV[2], 'result', result)
redis.call('PEXPIRE', txn, ARGV[9])
return {'ok', result}
