-- unblock: an operator made the account active again: its counts start over. KEYS and
-- ARGV: see fraud.lua (fraud_unblock).
fraud_unblock(KEYS, ARGV)
return 1
