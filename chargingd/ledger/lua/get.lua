-- get: one account's fields and its live hold count, read atomically.
-- KEYS[1] acct hash   KEYS[2] leases zset
-- Returns {flat field/value list, live holds} ({} when the account does not exist)
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {} end
return {fields, redis.call('ZCARD', KEYS[2])}
