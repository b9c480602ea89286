-- create: a new account (refused if it exists). Inputs are validated in Python.
-- KEYS[1] acct hash   KEYS[2] audit stream
-- ARGV[1] id  ARGV[2] mode  ARGV[3] currency  ARGV[4] balance micros
-- ARGV[5] credit limit micros  ARGV[6] tariff  ARGV[7] max calls  ARGV[8] identities
-- ARGV[9] now ms  ARGV[10] who  ARGV[11] why  ARGV[12] audit max entries
-- Returns {'ok'} | {'exists'}
local acct, stream = KEYS[1], KEYS[2]
if redis.call('EXISTS', acct) == 1 then return {'exists'} end
local now = tonumber(ARGV[9])
local balance, credit_limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local status, reason = credit_rule(ARGV[2], 'active', '', balance, credit_limit)
redis.call('HSET', acct, 'id', ARGV[1], 'mode', ARGV[2], 'currency', ARGV[3],
           'balance', s(balance), 'credit_limit', s(credit_limit), 'reserved', '0',
           'status', status, 'status_reason', reason, 'tariff', ARGV[6],
           'max_calls', ARGV[7], 'identities', ARGV[8], 'topups', '0', 'debits', '0',
           'initial', s(balance), 'created_ms', s(now), 'updated_ms', s(now))
journal(acct, now, 'open', 0, '', '', ARGV[10], ARGV[11])
audit(stream, ARGV[12], now, ARGV[10], 'create', ARGV[11], {}, snapshot(acct),
      {'mode', ARGV[2], 'currency', ARGV[3], 'credit_limit', s(credit_limit),
       'tariff', ARGV[6], 'max_calls', ARGV[7], 'identities', ARGV[8]})
return {'ok'}
