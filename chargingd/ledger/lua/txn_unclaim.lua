-- txn_unclaim: give back a claim made for an account that does not exist (a typo must
-- not burn the payment reference). Accounts are never deleted, so no money can have
-- been applied under it.
-- KEYS[1] ledger:txn:<txn id>   ARGV[1] account id
-- Returns 1 dropped | 0 not this account's
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
