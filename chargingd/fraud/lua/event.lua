-- event: the fraud rules of one call event (a CDR, an Access-Reject). KEYS and ARGV:
-- see fraud.lua (fraud_event). ARGV[8] '1': the reply's 6th value is the account
-- value's bytes after the event (false: none), for a process that keeps them
-- (chargingd/fraud/local.py: its next authorize of the account decided there).
local r = fraud_event(KEYS, ARGV)
if ARGV[8] == '1' then r[6] = redis.call('GET', KEYS[1]) end
return r
