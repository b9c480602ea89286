-- session_authorize: the first grant of a call and, when granted in full, its live
-- record with its indexes, in one script (sessions/fused.py; single Redis only: KEYS 8-10
-- are global keys, so Redis Cluster uses Ledger.reserve + SessionStore.create).
-- ledger_reserve and ledger_account_check are the ledger's reserve.lua and
-- account_check.lua themselves, wrapped as functions (chargingd/ledger/steps.py).
-- KEYS[1..5] reserve.lua's keys   KEYS[6] {a:ACC}:r:SID record   KEYS[7] {a:ACC}:calls
-- KEYS[8] sess:seen:{GATEWAY}:N (the call's last-seen shard)   KEYS[9] sess:lc:N (the
--   call's locator shard, sessions/shards.py; absent: no locator written, the gateway
--   echoes the account in Class)
-- ARGV[1..5] reserve.lua's ARGV[1..4] and [11] (StepBuilder.first_args; ARGV[2]: the
--   amount asked; ARGV[4] the lease's END, now + lease ms, as reserve_first.lua writes
--   it: turned back into reserve.lua's lease ms on the general path; ARGV[5]: its
--   deadline: a late run refuses itself and writes nothing)   ARGV[6] last seen ms
-- ARGV[7..8] the account check, packed (StepBuilder.first_check, built by the ledger):
--   ARGV[7] '' nothing to check, else "TARIFF\0CURRENCY\0MODE" (MODE '': any) the account
--   must still have (and be active); ARGV[8] '' or an identity it must still list.
--   Unpacked into account_check.lua's ARGV on the general path only.
-- ARGV[9] the record's stored value (sessions/record.py; held_micros = the amount asked)
--   but for its last pair, credit_micros, appended here (its map header counts it)
-- ARGV[10] '1': credit_micros is what is held only (hold_all, own_timer), else held +
--   available
-- The account id (the locator's value; the last-seen member "ACC\0SID") is the one in
--   KEYS[7], the store's own key (sessions/indexes.py live_key: "{a:ACC}:calls").
-- c (a local of the code around this script, sessions/fused.py: the plain authorize's
--   CONF; wrapped by session_authorize_fraud.lua: its ARGV.c, the same CONF) the
--   per-process arguments, a table in the code (_constants): reserve.lua's ARGV[5..10]
--   and [12], then the record's ttl (set as ARGV.c for reserve.lua). c.first: a new
--   call's full grant by ledger_reserve_first (on unless turned off:
--   FusedPath.general_reserve), every other case by the steps it stands for.
-- nested (a local of the code around it, as c: false in the plain authorize) how a
--   written record is answered (below).
-- ARGV.account (only when wrapped by session_authorize_fraud.lua, which checked the
--   account itself: a Lua table) the account's fields as its account_check read them;
--   ARGV.checked (true: the wrapper checked, ARGV[7..8] are not read) and ARGV.fresh
--   (true: the wrapper's fraud_seen found no record of this call in KEYS[6])
-- The account is read once: account_check's HMGET also reads the fields the reserve
-- decides with and hands them to it (nothing writes the account in between).
-- Returns {'stale', {}} the account changed (or is gone): nothing done
--       | {'inactive', {status, status_reason}}: not active, nothing done
--       | {reserve reply, created}: created 1; 0 when a record exists (a replayed
--         authorize keeps it; a live one's reply is {'ok', its held_micros, 0, 0}, nothing
--         reserved); -1 not written (refused or partial: sessions/service.py decides).
--         Created 1 and not nested: the reserve's reply and 1 in one flat list
--         {'ok', granted, available after, reclaimed, 1} (one table fewer to answer);
--         granted straight by reserve_first (the amount asked, nothing reclaimed): the
--         available after alone, an integer (sessions/fused.py completes the rest).
-- The fraud rules as a daemon evaluated them (chargingd/fraud/local.py; [fraud] on,
-- the plain authorize only, never wrapped): the account's rule value, and the caller
-- IP's when it has one of its own, as the last 1 or 2 KEYS, and 3 ARGV each after the
-- 10 above: the bytes the daemon evaluated on ('' none stored), the value the call
-- leaves, its PX ('0': unchanged). Stored bytes other than those: {'moved', {the
-- account's stored bytes, the caller IP's ('' none)}}, nothing done (the daemon
-- evaluates the call again on them, once, else sends it to the rules' Lua); a record
-- of the call ({'known', {}}: a retransmission, below). Written when the reserve granted a new
-- call (in full or in part), as fraud_admit writes after its reserve.
local fv, fip = nil, nil
if #ARGV > 10 then
  local nf = (#ARGV - 10) / 3
  fv = KEYS[#KEYS - nf + 1]
  local now_v = redis.call('GET', fv) or ''
  local now_ip = nf == 2 and (redis.call('GET', KEYS[#KEYS]) or '')
  if now_v ~= ARGV[11] or (now_ip and now_ip ~= ARGV[14]) then
    return {'moved', {now_v, now_ip or ''}}
  end
  if nf == 2 then
    fip = KEYS[#KEYS]
    KEYS[#KEYS] = nil
  end
  KEYS[#KEYS] = nil  -- KEYS[9] the locator, or none
end
local res, granted, after
-- A new call's first full grant, straight (ledger/lua/reserve_first.lua: the amount
-- granted and the available after it, no reply table; nil when the call is anything
-- else, a record of it too, nothing written; then the general steps below decide it).
-- c.first: on unless turned off (FusedPath.general_reserve).
if c.first then granted, after = ledger_reserve_first(KEYS, ARGV, c) end
if not granted then
  ARGV.c = c  -- reserve.lua reads them there
  ARGV[4] = s(ARGV[4] - ARGV[3])  -- reserve.lua's ARGV[4]: the lease in ms, not its end
  if not ARGV.checked then
    local args = {'0', '', '', '', ''}
    if ARGV[7] ~= '' then
      local tariff, currency, mode = string.match(ARGV[7], '^(.*)%z(.-)%z(.*)$')
      args = {'1', tariff, currency, ARGV[8], mode}
    end
    local chk = ledger_account_check({KEYS[1]}, args)
    if chk[1] == 'stale' then return {'stale', {}} end
    if chk[1] == 'inactive' then return {'inactive', {chk[2], chk[3]}} end
    ARGV.account = chk[2] or ARGV.account
  end
  -- A retransmission (the record of this call is live): nothing is reserved again. Its
  -- hold stays what the record says (the account's other calls may have taken or freed
  -- money since); the caller answers it from the record, as the first answer was.
  local known = not ARGV.fresh and redis.call('GET', KEYS[6])
  -- A retransmission with the daemon's evaluation of the rules: it counted the call,
  -- as it cannot see the record; fraud.lua's fraud_seen does not ('known': not counted,
  -- nothing fired, the reserve answers it). {'known', {}}: nothing done, the daemon
  -- sends it to the rules' Lua (reserve_first above writes nothing for it either).
  if known and fv then return {'known', {}} end
  if known then
    local r = rec_unpack(known)
    if (r[$state] or 'live') == 'live' and (r[$adopted] or 0) == 0 then
      return {{'ok', r[$held_micros] or 0, 0, 0}, 0}
    end
  end
  -- The reserve's KEYS and ARGV are this script's first ones (it reads no others): no copy.
  res = ledger_reserve(KEYS, ARGV)
  if res[1] ~= 'ok' then return {res, -1} end
  if res[2] < tonumber(ARGV[2]) then
    if fv then  -- granted in part: the rules' values as the daemon left them
      if ARGV[13] ~= '0' then redis.call('SET', fv, ARGV[12], 'PX', ARGV[13]) end
      if fip and ARGV[16] ~= '0' then redis.call('SET', fip, ARGV[15], 'PX', ARGV[16]) end
    end
    return {res, -1}
  end
  granted, after = res[2], res[3]
end
-- The record, completed with the money the Session-Timeout of the answer stands for
-- (held + available, or held only): what the gateway was allowed (sessions/settle.py).
local credit = granted + after
if ARGV[10] == '1' then credit = granted end
local call = redis.call  -- a local: one table look-up, not two per call
local rec = ARGV[9] .. cmsgpack.pack($credit_micros, credit)
-- the reserve's reply (a straight grant's: {'ok', granted, after, 0}) where answered
if not call('SET', KEYS[6], rec, 'NX', 'EX', c[8]) then
  return {res or {'ok', granted, after, 0}, 0}
end
if fv then  -- a new call granted: the rules' values as the daemon left them
  if ARGV[13] ~= '0' then call('SET', fv, ARGV[12], 'PX', ARGV[13]) end
  if fip and ARGV[16] ~= '0' then call('SET', fip, ARGV[15], 'PX', ARGV[16]) end
end
local sid, calls, locator = ARGV[1], KEYS[7], KEYS[9]
call('HSET', calls, sid, '')  -- no expiry: emptied by the closes (store.py)
local acc = string.sub(calls, 4, -8)  -- "{a:ACC}:calls"
call('ZADD', KEYS[8], ARGV[6], acc .. '\0' .. sid)
if locator then call('HSET', locator, sid, acc) end  -- no expiry (store.py)
if nested then return {res or {'ok', granted, after, 0}, 1} end
-- straight (reserve_first: granted the amount asked, nothing reclaimed): the available
-- after alone, an integer (no reply table for Redis to walk; the caller knows the rest)
if not res then return after end
return {res[1], res[2], res[3], res[4], 1}
