-- check: the fraud rules of one authorize, on their own (Redis Cluster, or a caller
-- that did not fuse them into its own script): a call already answered is answered the
-- same (fraud_seen: not counted again), else fraud_check, remembering a refusal. A call
-- the rules allow is live from here (fraud_admit 'l': concurrent authorizes on other
-- daemons count it; the caller forgets it if its reserve refuses, note.lua); its
-- country is learnt only once the reserve granted it (admit.lua), as the fused script
-- does; the verdict's 6th value says whether admit.lua has a country to learn (1) or
-- not (0: the country is known, called lately). KEYS and ARGV: see fraud.lua
-- (authorize).
local seen, started = fraud_seen(KEYS, ARGV)
if seen then return seen end
local verdict = fraud_check(KEYS, ARGV)
if verdict[1] == 'ok' then
  fraud_admit(KEYS, ARGV, 'l')
  fraud_counted(KEYS, ARGV)
  -- a call its Start adopted (its record no authorize's yet): its repeats are known
  if started then fraud_known(KEYS, ARGV) end
else
  fraud_remember(KEYS, ARGV, verdict)
end
fraud_save(KEYS, ARGV)
verdict[6] = fr_learn
return verdict
