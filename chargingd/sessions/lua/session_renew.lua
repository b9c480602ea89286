-- session_renew: an interim's commit of the cumulative cost, the renewed hold for the
-- next grant and the record's grant fields, in one script (sessions/fused.py; single
-- Redis only: KEYS[7] is global). ledger_commit / ledger_reserve are commit.lua and
-- reserve.lua themselves, wrapped as functions (chargingd/ledger/steps.py).
-- KEYS[1..5] the ledger's session keys   KEYS[6] {a:ACC}:r:SID record
-- KEYS[7] sess:deadlines
-- ARGV[1] session id   ARGV[2] the cumulative cost of this usage   ARGV[3] now ms
-- ARGV[4] lease ms (commit.lua's ARGV[1..3]; reserve.lua's ARGV[1], [3], [4])
-- The rest of commit.lua's and reserve.lua's ARGV are this process's, in the script's
-- code (fused.py _renew_constants): RENEW_COMMIT commit.lua's ARGV[4..7], RENEW_RESERVE
-- reserve.lua's ARGV.c; the reserve's amount is computed here as
-- max(1, next cost - total debited)
-- ARGV[5] next cost: the cost of the usage plus the next grant
-- ARGV[6] paid_usage_s of the hold, valid when total debited == ARGV[2]
-- ARGV[7] deadline index member
-- ARGV[8] the session's deadline ms when the hold is granted in full: '0' none; else
--   the end of what it pays for (a session that had a deadline keeps one: the cutter
--   renews the hold there, or cuts, for a gateway that stops sending Interims)
-- With the interim's packet noted by the caller (sessions/noting.py; absent: the
-- record was touched already and is read and written here):
-- ARGV[9] the record's stored value the caller noted the packet on and priced from:
--   any other value there (another writer came first) -> {'stale'}, nothing done
-- ARGV[10] the new stored value when the grant is full: the packet noted, the grant's
--   fields (held max(1, next cost - ARGV[2]): the reserve's amount here when the
--   commit debited ARGV[2]; debited ARGV[2], paid ARGV[6], not limited, deadline
--   ARGV[8])
-- ARGV[11] the noted fields (a msgpack map), merged into the record otherwise
-- Returns 1 when the grant was full and the record updated (the caller needs nothing
-- else then: one integer, not three tables for Redis to walk and write), else
-- {commit reply, reserve reply ({} if not run), 0}: the rest is left to
-- sessions/grants.py.
local noted = ARGV[9] ~= nil
if noted and redis.call('GET', KEYS[6]) ~= ARGV[9] then return {'stale'} end
local function note()  -- the packet noted, the grant left to the caller
  if not noted then return end
  local rec = rec_unpack(ARGV[9])
  for k, v in pairs(cmsgpack.unpack(ARGV[11])) do rec[k] = v end
  redis.call('SET', KEYS[6], rec_pack(rec), 'KEEPTTL')
end
-- The ledger's steps take this script's own KEYS (they read KEYS[1..5] only) and ARGV
-- (the commit reads ARGV[1..7] only, the reserve ARGV[1..5] with ARGV.c), written in
-- place: no copies into new tables. The cost and now as numbers, converted once (the
-- steps' tonumber() of a number converts nothing).
local lease, next_cost, paid, member = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local cost, now = ARGV[2] + 0, ARGV[3] + 0
ARGV[2], ARGV[3] = cost, now
ARGV[4], ARGV[5], ARGV[6], ARGV[7] =
  RENEW_COMMIT[1], RENEW_COMMIT[2], RENEW_COMMIT[3], RENEW_COMMIT[4]
ARGV.account = true  -- commit.lua leaves the account's fields there
-- and its writes of the hold and the account, for the reserve's own (round 17a)
ARGV.pending = true
local c = ledger_commit(KEYS, ARGV)
if c[1] == 'unknown' then note(); return {c, {}, 0} end
local total = c[3]
local want = next_cost - total
local amount = want
if amount < 1 then amount = 1 end
ARGV[2], ARGV[4], ARGV[5], ARGV.c = amount, lease + 0, '0', RENEW_RESERVE
-- the account, the session hash's flags and the session's hold as the commit read and
-- wrote them (nothing else writes them in between; ARGV.account, ARGV.known,
-- ARGV.hold): the reserve decides with them instead of reading them again
-- (in pcall: an error raised in the reserve still leaves the commit's writes made,
-- as when the commit wrote them itself, then is raised again)
local done, r = pcall(ledger_reserve, KEYS, ARGV)
local pending = ARGV.pending  -- the commit's writes the reserve did not make
if type(pending) == 'table' then RESERVE_STEPS.flush(KEYS[1], KEYS[2], ARGV[1], pending) end
if not done then error(r, 0) end
if r[1] ~= 'ok' or r[2] < want or total ~= cost then note(); return {c, r, 0} end
local deadline = ARGV[8]
if noted then
  if r[2] ~= amount then note(); return {c, r, 0} end  -- (the held ARGV[10] has)
  redis.call('SET', KEYS[6], ARGV[10], 'KEEPTTL')
else
  local raw = redis.call('GET', KEYS[6])
  if not raw then return {c, r, 0} end
  local rec = rec_unpack(raw)
  rec[$debited_micros] = total
  rec[$held_micros] = r[2]
  rec[$paid_usage_s] = tonumber(paid)
  rec[$limited] = 0
  if deadline ~= '0' then rec[$deadline_ms] = tonumber(deadline) end
  redis.call('SET', KEYS[6], rec_pack(rec), 'KEEPTTL')
end
if deadline ~= '0' then redis.call('ZADD', KEYS[7], deadline, member) end
return 1
