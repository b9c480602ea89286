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
-- With the close made here too (the caller built the CDR and the closed record for the
-- release it expects: the whole final cost debited, no overrun):
-- KEYS[8] the account's live ids   KEYS[9] the call's last-seen shard
-- KEYS[10], KEYS[11] its live locator shards (sess:lc:N, the older daemons' sess:locs:N)
-- KEYS[12] cdr:stream   KEYS[13] sess:deadlines   KEYS[14] (optional) sess:loc:SID, the
--   closed call's locator (a client that does not echo Class: a late Stop finds it)
-- ARGV[8] the CDR (msgpack)   ARGV[9] the session's total debit it says
-- ARGV[10] the closed record (its stored value)   ARGV[11] account id
-- ARGV[12] the call's member in the last-seen and deadline indexes
-- STOP_CLOSED_TTL_S (in the code) how long the closed record and locator are kept
-- Returns {'stale'} another value is stored (another writer came first: the caller
--   takes session_touch + session_close) | {'busy'} another closer holds the lease
--   (nothing done either way) | release.lua's reply itself ({'ok'|'closed', ...} |
--   {'unknown'}: not nested, one table fewer for Redis to walk); with the close made
--   here, that reply with the CDR's stream entry id appended (a sixth element)
-- Order (docs/credit-control.md): release here; then the CDR's XADD and the closed mark:
-- here, in the same script, when the release moved what the CDR says (ARGV[9], no
-- overrun); else the caller builds the CDR from the reply and XADDs it and marks the
-- record closed, both in one pipeline, in that order.
if redis.call('GET', KEYS[6]) ~= ARGV[2] then return {'stale'} end
if not redis.call('SET', KEYS[7], ARGV[1], 'NX', 'EX', STOP_LEASE_S) then return {'busy'} end
redis.call('SET', KEYS[6], ARGV[3], 'KEEPTTL')
-- its KEYS[1..5] and ARGV[1..8], written in place: no copies (now as a number,
-- converted once: release.lua's tonumber() of it converts nothing)
local policy, sid, cdr, total, closed, acc, who =
  ARGV[7], ARGV[4], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
ARGV[1], ARGV[2], ARGV[3] = sid, ARGV[5], ARGV[6] + 0
ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8] =
  STOP_RELEASE[1], STOP_RELEASE[2], STOP_RELEASE[3], STOP_RELEASE[4], policy
local r = ledger_release(KEYS, ARGV)
if not cdr or r[1] ~= 'ok' or r[3] ~= tonumber(total) or r[5] ~= 0 then return r end
-- the close (store.py _closing_writes: the same writes, in this order after the XADD)
r[6] = redis.call('XADD', KEYS[12], '*', 'cdr', cdr)
redis.call('SET', KEYS[6], closed, 'EX', STOP_CLOSED_TTL_S)
for i = 10, 11 do
  if redis.call('HGET', KEYS[i], sid) == acc then redis.call('HDEL', KEYS[i], sid) end
end
redis.call('HDEL', KEYS[8], sid)
if KEYS[14] then redis.call('SET', KEYS[14], acc, 'EX', STOP_CLOSED_TTL_S) end
redis.call('ZREM', KEYS[13], who)
redis.call('ZREM', KEYS[9], who)
redis.call('DEL', KEYS[7])
return r
