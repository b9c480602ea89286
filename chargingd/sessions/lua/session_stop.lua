-- session_stop: a Stop noted on a record this process holds (sessions/noting.py):
-- the close lease, the release at the final cost and the Stop's note on the record, in
-- one script (sessions/fused.py). All keys are in the {a:ACC} slot.
-- ledger_release is release.lua itself, wrapped as a function (chargingd/ledger/steps.py).
-- KEYS[1..5] the ledger's session keys   KEYS[6] {a:ACC}:r:SID record
-- KEYS[7] {a:ACC}:s:SID:fin close lease
-- ARGV[1] lease token
-- ARGV[2] the record's stored value the caller noted the Stop on and priced from
-- ARGV[3] the stored value with the Stop noted
-- ARGV[4] session id   ARGV[5] final cumulative cost ('' none)   ARGV[6] now ms
-- ARGV[7] the release's policy (release.lua's ARGV[1..3] and [8])
-- This process's values are in the script's code (fused.py _stop_constants):
-- STOP_LEASE_S the lease's seconds, STOP_RELEASE release.lua's ARGV[4..7]
-- Returns {'stale'} another value is stored (another writer came first: the caller
--   takes session_touch + session_close) | {'busy'} another closer holds the lease
--   (nothing done either way) | release.lua's reply itself ({'ok'|'closed', ...} |
--   {'unknown'}: not nested, one table fewer for Redis to walk)
-- Order (docs/credit-control.md): release here; then the caller XADDs the CDR and
-- marks the record closed, both in one pipeline, in that order.
if redis.call('GET', KEYS[6]) ~= ARGV[2] then return {'stale'} end
if not redis.call('SET', KEYS[7], ARGV[1], 'NX', 'EX', STOP_LEASE_S) then return {'busy'} end
redis.call('SET', KEYS[6], ARGV[3], 'KEEPTTL')
-- its KEYS[1..5] and ARGV[1..8], written in place: no copies (now as a number,
-- converted once: release.lua's tonumber() of it converts nothing)
local policy = ARGV[7]
ARGV[1], ARGV[2], ARGV[3] = ARGV[4], ARGV[5], ARGV[6] + 0
ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8] =
  STOP_RELEASE[1], STOP_RELEASE[2], STOP_RELEASE[3], STOP_RELEASE[4], policy
return ledger_release(KEYS, ARGV)
