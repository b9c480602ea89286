-- session_renew: an interim's commit of the cumulative cost, the renewed hold for the
-- next grant and the record's grant fields, in one script (sessions/fused.py; single
-- Redis only: KEYS[7] is global). ledger_commit / ledger_reserve are commit.lua and
-- reserve.lua themselves, wrapped as functions (chargingd/ledger/steps.py).
-- KEYS[1..5] the ledger's session keys   KEYS[6] {a:ACC}:s:SID record
-- KEYS[7] sess:deadlines
-- ARGV[1..6] commit.lua's ARGV (ARGV[2]: the cumulative cost of this usage)
-- ARGV[7..16] reserve.lua's ARGV; its amount (ARGV[8]) is recomputed here as
--   max(1, next cost - total debited)
-- ARGV[17] next cost: the cost of the usage plus the next grant
-- ARGV[18] paid_usage_s of the hold, valid when total debited == ARGV[2]
-- ARGV[19] deadline index member   ARGV[20] '1': the record had a deadline, clear it
-- Returns {commit reply, reserve reply ({} if not run), applied}: applied 1 when the
-- grant was full and the record updated; 0 leaves the rest to sessions/service.py.
local keys = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}
local c = ledger_commit(keys, {unpack(ARGV, 1, 6)})
if c[1] == 'unknown' then return {c, {}, 0} end
local total = c[3]
local want = tonumber(ARGV[17]) - total
local amount = want
if amount < 1 then amount = 1 end
local rargs = {unpack(ARGV, 7, 16)}
rargs[2] = s(amount)
local r = ledger_reserve(keys, rargs)
if r[1] ~= 'ok' or r[2] < want or total ~= tonumber(ARGV[2]) then return {c, r, 0} end
if redis.call('EXISTS', KEYS[6]) == 0 then return {c, r, 0} end
redis.call('HSET', KEYS[6], 'debited_micros', s(total), 'held_micros', s(r[2]),
           'paid_usage_s', ARGV[18], 'limited', '0')
if ARGV[20] == '1' then
  redis.call('HSET', KEYS[6], 'deadline_ms', '0')
  redis.call('ZREM', KEYS[7], ARGV[19])
end
return {c, r, 1}
