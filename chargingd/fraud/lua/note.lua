-- note: a call the rules admitted was not granted after all (forgotten from the live
-- calls; its repeats go to the ledger), or a refusal to remember for its repeats (a
-- caller IP's rule on Redis Cluster). KEYS and ARGV: see fraud.lua (fraud_note).
-- ARGV[6] '1': the reply is the value's bytes after it (false: none), for a process
-- that keeps them (chargingd/fraud/local.py).
fraud_note(KEYS, ARGV)
if ARGV[6] == '1' then return redis.call('GET', KEYS[1]) end
return 1
