-- lift: an operator ended the refusals the rules hold against an active account. KEYS
-- and ARGV: see fraud_events.lua (fraud_lift).
return fraud_lift(KEYS, ARGV)
