-- session_authorize_fraud: the fraud rules of a call, then its first grant, in one script
-- (sessions/fused.py, when [fraud] is on; single Redis only, like session_authorize).
-- Loaded after the ledger's account_check, reserve and status (ledger_*), the fraud
-- rules' functions (chargingd/fraud/lua/fraud.lua) and session_authorize.lua wrapped as
-- session_authorize(KEYS, ARGV): nothing is copied.
-- KEYS[1] account_check's KEYS[1] (built by the ledger)   KEYS[2..1+nk] session_authorize's
--   KEYS, then the fraud rules' (fraud.lua, authorize)
-- ARGV[1] nk   ARGV[2] na (how many ARGV session_authorize takes)
-- ARGV[3..7] account_check's ARGV   ARGV[8..7+na] session_authorize's (its 15 per call:
--   the per-process ones are CONF, defined with the functions as the plain
--   authorize's: sessions/fused.py _constants)   then the rules'
-- Returns what session_authorize returns when the account changed or is not active
-- (nothing counted), {'fraud', verdict} when a rule refuses or blocks (nothing
-- reserved), else {reserve reply, created, verdict}: the call counted, and admitted
-- (live, its country known) when the reserve granted anything. verdict: fraud_check's.
-- A call already answered (a retransmission: fraud_seen) is not counted again: a rule's
-- refusal is answered again ({'fraud', {'again', ...}}), and one the ledger answered
-- goes to the reserve, which answers it as before ({..., {'known', ...}}). The rules'
-- state is read once and written once (fraud_save).
local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local chk = ledger_account_check({KEYS[1]}, {unpack(ARGV, 3, 7)})
if chk[1] == 'stale' then return {'stale', {}} end
if chk[1] == 'inactive' then return {'inactive', {chk[2], chk[3]}} end
local fkeys = {unpack(KEYS, 2 + nk)}
local fargv = {unpack(ARGV, 8 + na)}
fargv[1] = tonumber(fargv[1])  -- now: read by every fraud step (one strtod, not five)
local verdict = fraud_seen(fkeys, fargv)
local new = verdict == nil
if new then
  verdict = fraud_check(fkeys, fargv)
  if verdict[1] ~= 'ok' then
    fraud_remember(fkeys, fargv, verdict)
    fraud_save(fkeys, fargv)
    return {'fraud', verdict}
  end
end
if verdict[1] ~= 'ok' and verdict[1] ~= 'known' then return {'fraud', verdict} end
-- The account as the check read it (no rule that lets the call through writes it):
-- session_authorize's reserve decides with it instead of reading it again.
local sargv = {unpack(ARGV, 8, 7 + na)}
sargv.account, sargv.checked, sargv.c = chk[2], true, CONF
-- A new call: fraud_seen found no record of it (the same key): none to read again.
sargv.fresh = new and fkeys[4] == KEYS[7]
local r = session_authorize({unpack(KEYS, 2, 1 + nk)}, sargv)
if new then
  if type(r[1]) == 'table' and r[1][1] == 'ok' then
    fraud_admit(fkeys, fargv, 'ln')
  elseif type(r[1]) == 'table' then
    fraud_known(fkeys, fargv)  -- the ledger refused it: its repeats go to the ledger
  end
  fraud_save(fkeys, fargv)
end
return {r[1], r[2], verdict}
