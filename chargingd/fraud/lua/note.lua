-- note: a call the rules admitted was not granted after all (forgotten from the live
-- calls; its repeats go to the ledger), or a refusal to remember for its repeats (a
-- caller IP's rule on Redis Cluster). KEYS and ARGV: see fraud.lua (fraud_note).
fraud_note(KEYS, ARGV)
return 1
