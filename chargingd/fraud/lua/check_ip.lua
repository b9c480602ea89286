-- check_ip: the per-caller-IP rules of one authorize in their own slot (Redis Cluster),
-- run once the account's own check (check.lua) found the call new. KEYS and ARGV: see
-- fraud.lua (authorize; KEYS[1], [4] and [5] all the caller IP's value, no block step).
local verdict = fraud_check(KEYS, ARGV)
fraud_save(KEYS, ARGV)
return verdict
