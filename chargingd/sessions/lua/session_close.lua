-- session_close: take the close lease of a live session and release its money at the
-- final cost, in one script (sessions/fused.py). All keys are in the {a:ACC} slot.
-- ledger_release is release.lua itself, wrapped as a function (chargingd/ledger/steps.py).
-- KEYS[1..5] the ledger's session keys   KEYS[6] {a:ACC}:r:SID record
-- KEYS[7] {a:ACC}:s:SID:fin close lease
-- ARGV[1] lease token   ARGV[2] lease_s   ARGV[3] usage_s the cost was rated on
-- ARGV[4] answer_ms it was rated with   ARGV[5..12] release.lua's ARGV
-- Returns {'busy'} another closer holds the lease | {'gone'} closed or missing
--   | {'stale', last_usage_s, answer_ms}: rated on old data, lease given back: re-rate
--   | {'ok', release reply, the record (its stored value)}
-- Order (docs/credit-control.md): release here; then the caller XADDs the CDR and
-- marks the record closed, both in one pipeline, in that order.
if not redis.call('SET', KEYS[7], ARGV[1], 'NX', 'EX', ARGV[2]) then return {'busy'} end
local raw = redis.call('GET', KEYS[6])
if not raw then return {'gone'} end
local rec = rec_unpack(raw)
if (rec[$state] or 'live') ~= 'live' then return {'gone'} end
local last, answer = rec[$last_usage_s] or 0, rec[$answer_ms] or 0
if last > tonumber(ARGV[3]) or answer ~= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[7])
  return {'stale', last, answer}
end
-- its KEYS[1..5] and ARGV[1..8] (ARGV[5..12] here, moved down in place): no copies
for i = 1, 8 do ARGV[i] = ARGV[i + 4] end
local rel = ledger_release(KEYS, ARGV)
return {'ok', rel, raw}
