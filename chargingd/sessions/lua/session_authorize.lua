-- session_authorize: the first grant of a call and, when granted in full, its live
-- record with its indexes, in one script (sessions/fused.py; single Redis only: KEYS 8-10
-- are global keys, so Redis Cluster uses Ledger.reserve + SessionStore.create).
-- ledger_reserve and ledger_account_check are the ledger's reserve.lua and
-- account_check.lua themselves, wrapped as functions (chargingd/ledger/steps.py).
-- KEYS[1..5] reserve.lua's keys   KEYS[6] {a:ACC}:r:SID record   KEYS[7] {a:ACC}:calls
-- KEYS[8] sess:seen:{GATEWAY}:N (the call's last-seen shard)   KEYS[9] sess:locs:N (the
--   call's locator shard; absent: no locator written, the gateway echoes the account in
--   Class)
-- ARGV[1..12] reserve.lua's ARGV (ARGV[2]: the amount asked; ARGV[11]: its deadline:
--   a late run refuses itself and writes nothing)   ARGV[13] record ttl_s
-- ARGV[14] account id   ARGV[15] index member "ACC\0SID"   ARGV[16] last seen ms
-- ARGV[17..21] account_check.lua's ARGV (built by the ledger): '1' to check that the
--   account still has the tariff, currency, identity and mode the caller decided with
-- ARGV[22] the record's stored value (sessions/record.py; held_micros = the amount asked)
--   but for its last pair, credit_micros, appended here (its map header counts it)
-- ARGV[23] '1': credit_micros is what is held only (hold_all, own_timer), else held +
--   available
-- c (a local of the code around this script, sessions/fused.py: the plain authorize's
--   CONF; wrapped by session_authorize_fraud.lua: its ARGV.c, the same CONF) the
--   per-process arguments, a table in the code (_constants): reserve.lua's ARGV[5..10]
--   and [12], then ARGV[13] (set as ARGV.c for reserve.lua); the caller then sends
--   ARGV[1..4], [11], [14..23] as ARGV[1..15]. c.first: a new call's full grant by ledger_reserve_first (on unless
--   turned off: FusedPath.general_reserve), every other case by the steps it stands for
-- ARGV.account (only when wrapped by session_authorize_fraud.lua, which checked the
--   account itself: a Lua table) the account's fields as its account_check read them;
--   ARGV.checked (true: the wrapper checked, ARGV[17..21] are not read) and ARGV.fresh
--   (true: the wrapper's fraud_seen found no record of this call in KEYS[6])
-- The account is read once: account_check's HMGET also reads the fields the reserve
-- decides with and hands them to it (nothing writes the account in between).
-- Returns {'stale', {}} the account changed (or is gone): nothing done
--       | {'inactive', {status, status_reason}}: not active, nothing done
--       | {reserve reply, created}: created 1; 0 when a record exists (a replayed
--         authorize keeps it; a live one's reply is {'ok', its held_micros, 0, 0}, nothing
--         reserved); -1 not written (refused or partial: sessions/service.py decides).
local o, ttl = 0, ARGV[13]  -- o: where ARGV[14..23] are (c: 8 places lower)
if c then o, ttl = -8, c[8] end
local res
-- A new call's first full grant, straight (ledger/lua/reserve_first.lua: nil when the
-- call is anything else, a record of it too, nothing written; then the general steps
-- below decide it). c.first: on unless turned off (FusedPath.general_reserve).
if c and c.first then res = ledger_reserve_first(KEYS, ARGV, c) end
if not res then
  if c then ARGV.c = c end  -- reserve.lua reads them there
  if not ARGV.checked then
    local chk = ledger_account_check({KEYS[1]}, {unpack(ARGV, 17 + o, 21 + o)})
    if chk[1] == 'stale' then return {'stale', {}} end
    if chk[1] == 'inactive' then return {'inactive', {chk[2], chk[3]}} end
    ARGV.account = chk[2] or ARGV.account
  end
  -- A retransmission (the record of this call is live): nothing is reserved again. Its
  -- hold stays what the record says (the account's other calls may have taken or freed
  -- money since); the caller answers it from the record, as the first answer was.
  local known = not ARGV.fresh and redis.call('GET', KEYS[6])
  if known then
    local r = cmsgpack.unpack(known)
    if r[$state] == 'live' and (r[$adopted] or 0) == 0 then
      return {{'ok', r[$held_micros] or 0, 0, 0}, 0}
    end
  end
  -- The reserve's KEYS and ARGV are this script's first ones (it reads no others): no copy.
  res = ledger_reserve(KEYS, ARGV)
  if res[1] ~= 'ok' or res[2] < tonumber(ARGV[2]) then return {res, -1} end
end
-- The record, completed with the money the Session-Timeout of the answer stands for
-- (held + available, or held only): what the gateway was allowed (sessions/settle.py).
local credit = res[2] + res[3]
if ARGV[23 + o] == '1' then credit = res[2] end
local rec = ARGV[22 + o] .. cmsgpack.pack($credit_micros, credit)
if not redis.call('SET', KEYS[6], rec, 'NX', 'EX', ttl) then return {res, 0} end
redis.call('HSET', KEYS[7], ARGV[1], '')  -- no expiry: emptied by the closes (store.py)
redis.call('ZADD', KEYS[8], ARGV[16 + o], ARGV[15 + o])
if KEYS[9] then redis.call('HSET', KEYS[9], ARGV[1], ARGV[14 + o]) end  -- no expiry (store.py)
return {res, 1}
