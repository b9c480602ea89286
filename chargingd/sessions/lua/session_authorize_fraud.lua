-- session_authorize_fraud: the fraud rules of a call, then its first grant, in one script
-- (sessions/fused.py, when [fraud] is on; single Redis only, like session_authorize).
-- Loaded after the ledger's check_packed, reserve and status (ledger_*), the fraud
-- rules' functions (chargingd/fraud/lua/fraud.lua) and session_authorize.lua wrapped as
-- session_authorize(KEYS, ARGV): nothing is copied. fraud.lua's functions read this
-- call's KEYS and ARGV where they are (its places written in: sessions/fused.py
-- FRAUD_LAYOUT; docs/fraud-cost.md "Fourteenth round").
-- KEYS[1..8] session_authorize's KEYS[1..8] ([1] the account, [4] its audit stream, [6]
--   the call's record: fraud.lua's block step's two and record), then the rules' own:
--   [9] the account's value, [10] the call's answer key, [11] the caller IP's value when
--   it has one, then the call's locator (session_authorize's KEYS[9]) when one is
--   written, its place in ARGV[1].
-- ARGV[1] the locator's place in KEYS (0: none)   ARGV[2..11] session_authorize's 10 per
--   call, as the plain authorize sends them (the per-process ones are CONF, defined with
--   the functions as the plain authorize's: sessions/fused.py _constants): its [7..8]
--   (ARGV[8..9] here) the account check packed in two (StepBuilder.first_check), read
--   here by the ledger's check_packed.lua, not by session_authorize (ARGV.checked: '',
--   '' stand in for them); its [1] (ARGV[2]) the session id, the rules' too
--   ARGV[12..] the rules': [12] identity, [13] ops, [14] number, [15] country, [16] the
--   number's hash, [17] now, then [18..24] the block step's when a rule may block.
--   Written here, in places the call no longer needs: now as a number (read by every
--   fraud step: one conversion), the refusal's ttl REFUSAL_TTL (per process, in the
--   code, as CONF) in ARGV[1], the values' ttls worked out from the ops (fraud_ttls) in
--   ARGV[8], ARGV[9]. (docs/fraud-cost.md "Tenth round", "Twelfth round", "Fourteenth
--   round": what the call has already, or what the script can work out, is not sent.)
-- Returns what session_authorize returns when the account changed or is not active
-- (nothing counted), {'fraud', verdict} when a rule refuses or blocks (nothing
-- reserved), else {reserve reply, created, verdict}: the call counted, and admitted
-- (live, its country known) when the reserve granted anything. verdict: fraud_check's,
-- left out when it is 'ok' with nothing fired (the caller takes that for it).
-- A call already answered (a retransmission: fraud_seen) is not counted again: a rule's
-- refusal is answered again ({'fraud', {'again', ...}}), and one the ledger answered
-- goes to the reserve, which answers it as before ({..., {'known', ...}}). The rules'
-- state is read once and written once (fraud_save).
-- A daemon that evaluates the rules itself (chargingd/fraud/local.py) sends its calls
-- with the plain authorize (session_authorize.lua compares and writes the values), and
-- here the calls it cannot decide (their values not known to it, changed by another
-- writer, a refusal): ARGV[1] holds, beside the locator's place, 100 when the reply is
-- to say what the rules' values are after it: {reply, {account value, caller IP value}}
-- (false: none stored; the caller IP's false when it has none of its own).
local at = ARGV[1] + 0
local learn = at >= 100
at = at % 100
local ipkey = nil  -- the caller IP's value, when it has one of its own (else [11] is
if at ~= 11 then ipkey = KEYS[11] end  -- the locator, or none)
local function run()
local chk, account, why = ledger_check_packed(KEYS[1], ARGV[8], ARGV[9])
if chk == 'stale' then return {'stale', {}} end
if chk == 'inactive' then return {'inactive', {account, why}} end
-- the locator out of the rules' places (at 11 when there is no caller IP's value: that
-- place empty, as fraud.lua reads it then)
local locator = nil
if at > 0 then locator, KEYS[at] = KEYS[at], nil end
ARGV[1] = REFUSAL_TTL
ARGV[17] = ARGV[17] + 0
-- started: the call's record is one its accounting Start adopted (fr_started,
-- sessions/fused.py started_lua): a new call to the rules, its reserve as before
local verdict, started = fraud_seen(KEYS, ARGV)
local new = verdict == nil
if new then
  verdict = fraud_check(KEYS, ARGV)
  if verdict[1] ~= 'ok' then
    fraud_remember(KEYS, ARGV, verdict)
    ARGV[8], ARGV[9] = fraud_ttls(ARGV)
    fraud_save(KEYS, ARGV)
    return {'fraud', verdict}
  end
end
if verdict[1] ~= 'ok' and verdict[1] ~= 'known' then return {'fraud', verdict} end
-- The account as the check read it (no rule that lets the call through writes it):
-- session_authorize's reserve decides with it instead of reading it again.
-- A new call: fraud_seen found no record of it (the same key): none to read again.
local sargv = {ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], '', '', ARGV[10],
               ARGV[11], account = account, checked = true, c = CONF, fresh = new}
-- session_authorize's KEYS are this call's (it reads [1..9]): its locator in [9] (nil:
-- none) for its call, the rules' value put back after.
local value = KEYS[9]
KEYS[9] = locator
local r = session_authorize(KEYS, sargv)
KEYS[9] = value
if new then
  if type(r[1]) == 'table' and r[1][1] == 'ok' then
    fraud_admit(KEYS, ARGV, 'ln')
    -- its repeats known until its authorize has made the adopted record its own
    -- (sessions/authorize.py _authorize_adopted, after this run)
    if started then fraud_known(KEYS, ARGV) end
  elseif type(r[1]) == 'table' then
    fraud_known(KEYS, ARGV)  -- the ledger refused it: its repeats go to the ledger
  end
  ARGV[8], ARGV[9] = fraud_ttls(ARGV)
  fraud_save(KEYS, ARGV)
end
if verdict[1] == 'ok' and #verdict[4] == 0 then return r end  -- {reply, created}
return {r[1], r[2], verdict}
end
local out = run()
if not learn then return out end
local ip = false
if ipkey then ip = redis.call('GET', ipkey) end
return {out, {redis.call('GET', KEYS[9]), ip}}
