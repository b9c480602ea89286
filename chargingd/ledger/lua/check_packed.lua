-- check_packed: account_check.lua's checks on its ARGV packed in two, as the plain
-- authorize sends them (StepBuilder.first_check) and reserve_first.lua reads them.
-- Embedded in the fraud rules' fused authorize (sessions/lua/session_authorize_fraud.lua)
-- as ledger_check_packed(key, check, identity): plain values in, plain values out (no
-- KEYS, ARGV or reply tables: docs/fraud-cost.md "Fourteenth round").
-- key {a:ID}:acct   check '' (nothing to check) or "TARIFF\0CURRENCY\0MODE" (MODE '':
--   any) the account must still have   identity '' or an identity it must still list
-- Returns what account_check.lua returns, unpacked: 'ok', fields (the HMGET's reply: its
--   first 7 the account's RESERVE_FIELDS, as account_check.lua's fields, for a reserve
--   in the same script; nil when nothing was checked) | 'stale' the account changed (or
--   is gone) | 'inactive', status, status_reason
if check == '' then return 'ok', nil end
local a = redis.call('HMGET', key, 'mode', 'status', 'balance', 'credit_limit', 'reserved',
                     'max_calls', 'lease_due', 'tariff', 'currency', 'identities',
                     'status_reason')
local status = a[2]
if not status then return 'stale' end  -- gone (account_check.lua: its tariff differs)
if string.byte(check, -1) == 0 then  -- any mode
  if (a[8] or '') .. '\0' .. (a[9] or '') .. '\0' ~= check then return 'stale' end
elseif (a[8] or '') .. '\0' .. (a[9] or '') .. '\0' .. (a[1] or '') ~= check then
  return 'stale'
end
local ids = a[10]  -- the identity: the account's only one (no search), else listed
if identity ~= '' and ids ~= identity
   and not string.find('\n' .. (ids or '') .. '\n', '\n' .. identity .. '\n', 1, true) then
  return 'stale'
end
if status ~= 'active' then return 'inactive', status, a[11] or '' end
return 'ok', a
