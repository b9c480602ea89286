-- account_check: does the account still match what the caller decided with? Embedded in
-- sessions' fused scripts as ledger_account_check(KEYS, ARGV); the Ledger builds its
-- ARGV (StepBuilder.account_check), so no session script reads the account hash.
-- KEYS[1] {a:ID}:acct
-- ARGV[1] '1': check; 'status': check only that it is active (an authorize's record
--   write: a block between its reserve and its record refuses the call, so the block's
--   cut of the live calls cannot miss it); else nothing is checked
-- ARGV[2] tariff   ARGV[3] currency
-- ARGV[4] an identity the account must still list ('' none)   ARGV[5] mode ('' any)
-- Returns {'ok', fields} (fields: the account's RESERVE_FIELDS, read in the same HMGET:
--   a reserve later in the same script takes them as its ARGV.account instead of reading
--   the account again; nil when nothing was checked)
--       | {'stale'} the account changed (or is gone)
--       | {'inactive', status, status_reason}
if ARGV[1] ~= '1' and ARGV[1] ~= 'status' then return {'ok'} end
local a = redis.call('HMGET', KEYS[1], 'tariff', 'currency', 'status', 'status_reason',
                     'identities', 'mode', unpack(RESERVE_FIELDS, 3))
if ARGV[1] == 'status' then
  if not a[3] then return {'stale'} end
elseif a[1] ~= ARGV[2] or a[2] ~= ARGV[3] then
  return {'stale'}
elseif ARGV[5] ~= '' and a[6] ~= ARGV[5] then
  return {'stale'}
elseif ARGV[4] ~= '' and not string.find('\n' .. (a[5] or '') .. '\n', '\n' .. ARGV[4] .. '\n', 1, true)
then
  return {'stale'}
end
if a[3] ~= 'active' then return {'inactive', a[3], a[4] or ''} end
return {'ok', {a[6], a[3], unpack(a, 7, 11)}}
