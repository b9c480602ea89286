-- (Round 17a, docs/performance.md: the script as it was, its 12 arguments rebuilt
-- from the 7 that sessions/fused.py sends now and the process's values in the code,
-- STOP_LEASE_S and STOP_RELEASE; its reply the release's own, not nested.)
local ARGV = {
  ARGV[1], STOP_LEASE_S, ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], STOP_RELEASE[1],
  STOP_RELEASE[2], STOP_RELEASE[3], STOP_RELEASE[4], ARGV[7]}
-- session_stop: a Stop noted on a record this process holds (sessions/noting.py):
-- the close lease, the release at the final cost and the Stop's note on the record, in
-- one script (sessions/fused.py). All keys are in the {a:ACC} slot.
-- ledger_release is release.lua itself, wrapped as a function (chargingd/ledger/steps.py).
-- KEYS[1..5] the ledger's session keys   KEYS[6] {a:ACC}:r:SID record
-- KEYS[7] {a:ACC}:s:SID:fin close lease
-- ARGV[1] lease token   ARGV[2] lease_s
-- ARGV[3] the record's stored value the caller noted the Stop on and priced from
-- ARGV[4] the stored value with the Stop noted   ARGV[5..12] release.lua's ARGV
-- Returns {'stale'} another value is stored (another writer came first: the caller
--   takes session_touch + session_close) | {'busy'} another closer holds the lease
--   (nothing done either way) | {'ok', release reply}
-- Order (docs/credit-control.md): release here; then the caller XADDs the CDR and
-- marks the record closed, both in one pipeline, in that order.
if redis.call('GET', KEYS[6]) ~= ARGV[3] then return {'stale'} end
if not redis.call('SET', KEYS[7], ARGV[1], 'NX', 'EX', ARGV[2]) then return {'busy'} end
redis.call('SET', KEYS[6], ARGV[4], 'KEEPTTL')
local rel = ledger_release(KEYS, {unpack(ARGV, 5, 12)})  -- its KEYS[1..5]: no copy
return rel  -- (round 17a: the release's reply, not nested)
