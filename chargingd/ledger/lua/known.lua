-- known: has the ledger already answered this session? (a retransmitted authorize, on any
-- daemon, must get that answer again, not a new decision). Read only; embeddable
-- (ledger/steps.py: ledger_known(KEYS, ARGV)): the fraud rules ask it before counting a
-- call (chargingd/fraud/lua/fraud.lua), so a repeat is answered by the reserve alone.
-- KEYS[1] leases zset   KEYS[2] session hash (closed, refused)
-- ARGV[1] session id
-- Returns 1 when the session holds a lease, was closed or its refusal is remembered, else 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
local known = redis.call('HMGET', KEYS[2], 'closed', 'refused')
if known[1] or known[2] then return 1 end
return 0
