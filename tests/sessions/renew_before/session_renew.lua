-- (Round 17a, docs/performance.md: the script as it was, its 27 arguments rebuilt
-- from the 11 that sessions/fused.py sends now and the process's values in the code,
-- RENEW_COMMIT and RENEW_RESERVE, the held max(1, next cost - cost); its applied reply
-- {c, r, 1} answered as 1.)
local held = ARGV[9] and math.max(ARGV[5] - ARGV[2], 1)
local ARGV = {
  ARGV[1], ARGV[2], ARGV[3], RENEW_COMMIT[1], RENEW_COMMIT[2], RENEW_COMMIT[3],
  RENEW_COMMIT[4], ARGV[1], '1', ARGV[3], ARGV[4], RENEW_RESERVE[1], RENEW_RESERVE[2],
  RENEW_RESERVE[3], RENEW_RESERVE[4], RENEW_RESERVE[5], RENEW_RESERVE[6], '0',
  RENEW_RESERVE[7], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], held,
  ARGV[11]}
-- (The record read and stored through rec_unpack/rec_pack as the current scripts do:
-- the stored layouts of round 13c, docs/performance.md, are not what this test compares.)
-- session_renew: an interim's commit of the cumulative cost, the renewed hold for the
-- next grant and the record's grant fields, in one script (sessions/fused.py; single
-- Redis only: KEYS[7] is global). ledger_commit / ledger_reserve are commit.lua and
-- reserve.lua themselves, wrapped as functions (chargingd/ledger/steps.py).
-- KEYS[1..5] the ledger's session keys   KEYS[6] {a:ACC}:r:SID record
-- KEYS[7] sess:deadlines
-- ARGV[1..7] commit.lua's ARGV (ARGV[2]: the cumulative cost of this usage)
-- ARGV[8..19] reserve.lua's ARGV; its amount (ARGV[9]) is recomputed here as
--   max(1, next cost - total debited)
-- ARGV[20] next cost: the cost of the usage plus the next grant
-- ARGV[21] paid_usage_s of the hold, valid when total debited == ARGV[2]
-- ARGV[22] deadline index member
-- ARGV[23] the session's deadline ms when the hold is granted in full: '0' none; else
--   the end of what it pays for (a session that had a deadline keeps one: the cutter
--   renews the hold there, or cuts, for a gateway that stops sending Interims)
-- With the interim's packet noted by the caller (sessions/noting.py; absent: the
-- record was touched already and is read and written here):
-- ARGV[24] the record's stored value the caller noted the packet on and priced from:
--   any other value there (another writer came first) -> {'stale'}, nothing done
-- ARGV[25] the new stored value when the grant is full: the packet noted, the grant's
--   fields (held ARGV[26], debited ARGV[2], paid ARGV[21], not limited, deadline ARGV[23])
-- ARGV[26] the hold a full grant leaves: max(1, next cost - ARGV[2])
-- ARGV[27] the noted fields (a msgpack map), merged into the record otherwise
-- Returns {commit reply, reserve reply ({} if not run), applied}: applied 1 when the
-- grant was full and the record updated; 0 leaves the rest to sessions/service.py.
local noted = ARGV[24] ~= nil
if noted and redis.call('GET', KEYS[6]) ~= ARGV[24] then return {'stale'} end
local function note()  -- the packet noted, the grant left to the caller
  if not noted then return end
  local rec = rec_unpack(ARGV[24])
  for k, v in pairs(cmsgpack.unpack(ARGV[27])) do rec[k] = v end
  redis.call('SET', KEYS[6], rec_pack(rec), 'KEEPTTL')
end
local keys = KEYS  -- the ledger's KEYS[1..5] (it reads no others): no copy
local cargs = {unpack(ARGV, 1, 7)}
cargs.account = true  -- commit.lua leaves the account's fields there
local c = ledger_commit(keys, cargs)
if c[1] == 'unknown' then note(); return {c, {}, 0} end
local total = c[3]
local want = tonumber(ARGV[20]) - total
local amount = want
if amount < 1 then amount = 1 end
local rargs = {unpack(ARGV, 8, 19)}
rargs[2] = s(amount)
-- the account as the commit read and wrote it (nothing else writes it in between):
-- the reserve decides with it instead of reading it again
rargs.account = cargs.account
local r = ledger_reserve(keys, rargs)
if r[1] ~= 'ok' or r[2] < want or total ~= tonumber(ARGV[2]) then note(); return {c, r, 0} end
if noted then
  if r[2] ~= tonumber(ARGV[26]) then note(); return {c, r, 0} end
  redis.call('SET', KEYS[6], ARGV[25], 'KEEPTTL')
else
  local raw = redis.call('GET', KEYS[6])
  if not raw then return {c, r, 0} end
  local rec = rec_unpack(raw)
  rec[$debited_micros] = total
  rec[$held_micros] = r[2]
  rec[$paid_usage_s] = tonumber(ARGV[21])
  rec[$limited] = 0
  if ARGV[23] ~= '0' then rec[$deadline_ms] = tonumber(ARGV[23]) end
  redis.call('SET', KEYS[6], rec_pack(rec), 'KEEPTTL')
end
if ARGV[23] ~= '0' then redis.call('ZADD', KEYS[7], ARGV[23], ARGV[22]) end
return 1
