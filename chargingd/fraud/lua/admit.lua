-- admit: a call check.lua allowed was granted (its reserve succeeded): its country is
-- known from now on for 'new_country' (the step-by-step path; the fused authorize
-- script learns it in its own run, after its reserve). KEYS and ARGV: check.lua's.
fraud_admit(KEYS, ARGV, 'n')
fraud_save(KEYS, ARGV)
return 1
