-- session_authorize_fraud: the fraud rules of a call, then its first grant, in one script
-- (sessions/fused.py, when [fraud] is on; single Redis only, like session_authorize).
-- Loaded after the ledger's check_packed, reserve and status (ledger_*), the fraud
-- rules' functions (chargingd/fraud/lua/fraud.lua) and session_authorize.lua wrapped as
-- session_authorize(KEYS, ARGV): nothing is copied.
-- KEYS[1..nk] session_authorize's KEYS (its [1] the account, [4] its audit stream: the
--   account check's key and the block step's two), then the rules' own (fraud.lua's
--   authorize KEYS, less what the call has already): its value [1], answer key [6], the
--   caller IP's value [5] when it has one: 2 or 3 keys. The others are the value again
--   (no caller IP), the call's record (session_authorize's KEYS[6]: Fraud.record_key is
--   the sessions' own) and the block step's [2], [3] (the reserve's KEYS[1], [4]: the
--   ledger's acct and audit keys of the same account, StepBuilder.status's).
-- ARGV[1] nk   ARGV[2..11] session_authorize's 10 per call, as the plain authorize sends
--   them (the per-process ones are CONF, defined with the functions as the plain
--   authorize's: sessions/fused.py _constants): its [7..8] (ARGV[8..9] here) the
--   account check packed in two (StepBuilder.first_check), read here by the ledger's
--   check_packed.lua, not by session_authorize (ARGV.checked: '', '' stand in for them)
--   ARGV[12..] the rules': fraud.lua's authorize ARGV [2] identity, [4] ops, [5]
--   number, [6] country, [11] the number's hash, [1] now, then [12..18] the block
--   step's when a rule may block; [3] is the session id (session_authorize's ARGV[1]),
--   [7] the refusal's ttl REFUSAL_TTL (per process, in the code, as CONF), [8] and [9]
--   the values' ttls, worked out from the ops (fraud_ttls), [10] unused. (docs/fraud.md
--   "Tenth round", "Twelfth round", "Fourteenth round": what the call has already, or
--   what the script can work out, is not sent.)
-- Returns what session_authorize returns when the account changed or is not active
-- (nothing counted), {'fraud', verdict} when a rule refuses or blocks (nothing
-- reserved), else {reserve reply, created, verdict}: the call counted, and admitted
-- (live, its country known) when the reserve granted anything. verdict: fraud_check's,
-- left out when it is 'ok' with nothing fired (the caller takes that for it).
-- A call already answered (a retransmission: fraud_seen) is not counted again: a rule's
-- refusal is answered again ({'fraud', {'again', ...}}), and one the ledger answered
-- goes to the reserve, which answers it as before ({..., {'known', ...}}). The rules'
-- state is read once and written once (fraud_save).
local nk = ARGV[1] + 0
local chk, account, why = ledger_check_packed(KEYS[1], ARGV[8], ARGV[9])
if chk == 'stale' then return {'stale', {}} end
if chk == 'inactive' then return {'inactive', {account, why}} end
local f = 1 + nk  -- the rules' first key
local value, ip = KEYS[f], KEYS[f]
if #KEYS - nk == 3 then ip = KEYS[f + 2] end
local fkeys = {value, KEYS[1], KEYS[4], KEYS[6], ip, KEYS[f + 1]}
-- now (a number: read by every fraud step, one conversion), identity, session id, ops,
-- number, country, refusal ttl, ttl and caller IP's ttl (fraud_ttls, before a save),
-- unused, hash, then the block step's
local fargv = {ARGV[17] + 0, ARGV[12], ARGV[2], ARGV[13], ARGV[14], ARGV[15], REFUSAL_TTL,
               0, 0, '0', ARGV[16]}
for i = 18, #ARGV do fargv[i - 6] = ARGV[i] end
local verdict = fraud_seen(fkeys, fargv)
local new = verdict == nil
if new then
  verdict = fraud_check(fkeys, fargv)
  if verdict[1] ~= 'ok' then
    fraud_remember(fkeys, fargv, verdict)
    fargv[8], fargv[9] = fraud_ttls(fargv)
    fraud_save(fkeys, fargv)
    return {'fraud', verdict}
  end
end
if verdict[1] ~= 'ok' and verdict[1] ~= 'known' then return {'fraud', verdict} end
-- The account as the check read it (no rule that lets the call through writes it):
-- session_authorize's reserve decides with it instead of reading it again.
-- A new call: fraud_seen found no record of it (the same key): none to read again.
local sargv = {ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], '', '', ARGV[10],
               ARGV[11], account = account, checked = true, c = CONF, fresh = new}
-- session_authorize's KEYS are this call's first nk (it reads no others, and KEYS[9]'s
-- presence says a locator is written): the rules' after them dropped, no copy.
for i = #KEYS, nk + 1, -1 do KEYS[i] = nil end
local r = session_authorize(KEYS, sargv)
if new then
  if type(r[1]) == 'table' and r[1][1] == 'ok' then
    fraud_admit(fkeys, fargv, 'ln')
  elseif type(r[1]) == 'table' then
    fraud_known(fkeys, fargv)  -- the ledger refused it: its repeats go to the ledger
  end
  fargv[8], fargv[9] = fraud_ttls(fargv)
  fraud_save(fkeys, fargv)
end
if verdict[1] == 'ok' and #verdict[4] == 0 then return r end  -- {reply, created}
return {r[1], r[2], verdict}
