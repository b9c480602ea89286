-- check: the fraud rules of one authorize, on their own (Redis Cluster, or a caller
-- that did not fuse them into its own script): fraud_check, then fraud_admit when no
-- rule refuses (the caller calls forget if the call is not granted after all).
-- KEYS and ARGV: see fraud.lua.
local verdict = fraud_check(KEYS, ARGV)
if verdict[1] == 'ok' then fraud_admit(KEYS, ARGV) end
return verdict
