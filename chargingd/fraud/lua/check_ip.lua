-- check_ip: the per-caller-IP rules of one authorize in their own slot (Redis Cluster),
-- run once the account's own check (check.lua) found the call new. KEYS and ARGV: see
-- fraud.lua (no authorize tail).
return fraud_check(KEYS, ARGV)
