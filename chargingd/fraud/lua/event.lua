-- event: the fraud rules of one call event (a CDR, an Access-Reject). KEYS and ARGV:
-- see fraud.lua (fraud_event).
return fraud_event(KEYS, ARGV)
