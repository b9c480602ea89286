-- txn_claim: give a transaction id (a payment reference) to one account, for good.
-- A txn id applied to one account is refused on any other (issue 9): the global index
-- is claimed first, then the account's own script applies the money (cluster-safe:
-- one key here, the {a:ID} slot there).
-- KEYS[1] ledger:txn:<txn id> (string: the owning account id)
-- ARGV[1] account id   ARGV[2] ttl ms (as long as the account remembers the txn)
-- Returns {'new'} claimed now | {'ok'} already this account's | {'taken', owner}
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return {'taken', owner} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if owner then return {'ok'} end
return {'new'}
