-- reserve_first: account_check.lua then reserve.lua for the common case of a new call,
-- in one straight line: the first FULL grant of a session nothing has seen (no ledger
-- session hash, no hold, no record of the caller's), on an active account with the
-- money (or credit) for all of it, no expired lease due, not late. Embedded by the
-- fused authorize (sessions/lua/session_authorize.lua, plain or wrapped by the fraud
-- rules' session_authorize_fraud.lua) as ledger_reserve_first(KEYS, ARGV, c).
-- ARGV.account (the wrapper's account_check read them, nothing written since): the
-- account's RESERVE_FIELDS, taken instead of reading them when nothing is to be
-- checked here.
-- Returns nil when the call is anything else: then it has WRITTEN NOTHING (its only
-- command that could write, HSETNX, is its last check and writes nothing when it
-- fails) and the caller runs account_check.lua and reserve.lua, which decide it.
-- Otherwise the amount and the available after it, two values (the reserve's reply
-- {'ok', amount, available after, 0} without its table: the caller builds it where it
-- answers one), having written the same fields, hold, lease and audit entry as they
-- would have (the equality of both paths, key by key:
-- tests/sessions/test_reserve_first.py).
-- KEYS[1..5] reserve.lua's   KEYS[6] a key of the caller that must not exist either
--   (the session's record: a retransmission is the caller's to answer)
-- ARGV[1] session id  ARGV[2] amount  ARGV[3] now ms  ARGV[4] the lease's end (now +
--   lease ms: its score and lease_due as written)  ARGV[5] deadline (reserve.lua's
--   ARGV[1..3], [4] as its end, [11]: StepBuilder.first_args)
-- ARGV[7..8] account_check.lua's ARGV packed (StepBuilder.first_check): ARGV[7] '' (nothing
--   to check) or "TARIFF\0CURRENCY\0MODE" (MODE '': any), ARGV[8] '' or the identity
--   (the account's only one is the same string: no search; else found in the list,
--   newline-bounded, as account_check.lua does)
-- c: reserve.lua's ARGV[5..10], [12] (partial, new_session, who, audit max, reclaims,
--   audit this hold, refusal ttl): the authorize's CONF (sessions/fused.py)
-- Every amount and time it reads is a decimal integer as the ledger writes them (s():
-- the account's fields; str(int): the arguments), so it writes them back as read
-- where the general path writes s(tonumber(x)): the same text. The arguments and
-- TIME's reply become numbers by arithmetic (one conversion; tonumber() makes two).
local call = redis.call  -- a local: one table look-up, not two per call
local acct, sid = KEYS[1], ARGV[1]  -- (each read more than once: locals)
if c[2] ~= '1' or call('EXISTS', KEYS[5], KEYS[6]) ~= 0 then return nil end
local check = ARGV[7]
local mode, status, balance, credit_limit, reserved, max_calls, due
if check ~= '' then
  -- a checked prepaid account: no credit limit to read (the HMGET's 7th field is the
  -- reserved amount, then max_calls and lease_due: one place earlier)
  local pre = string.sub(check, -8) == '\0prepaid'
  local a, ids
  if pre then
    a = call('HMGET', acct, 'tariff', 'currency', 'status', 'identities', 'mode', 'balance',
             'reserved', 'max_calls', 'lease_due')
    mode, status, ids, balance, reserved, max_calls, due =
      a[5], a[3], a[4], a[6], a[7], a[8], a[9]
  else
    a = call('HMGET', acct, 'tariff', 'currency', 'status', 'identities', 'mode', 'balance',
             'credit_limit', 'reserved', 'max_calls', 'lease_due')
    mode, status, ids, balance, credit_limit, reserved, max_calls, due =
      a[5], a[3], a[4], a[6], a[7], a[8], a[9], a[10]
  end
  -- account_check.lua's checks: anything but a match goes to it
  if status ~= 'active' or not mode then return nil end
  -- (the check with the account's mode first; MODE '' (any): a check ending in NUL)
  if (a[1] or '') .. '\0' .. (a[2] or '') .. '\0' .. mode ~= check
     and (string.byte(check, -1) ~= 0 or (a[1] or '') .. '\0' .. (a[2] or '') .. '\0' ~= check)
  then
    return nil
  end
  -- the identity: the account's only one (the same string: no search), else listed
  local id = ARGV[8]
  if id ~= '' and ids ~= id
     and not string.find('\n' .. (ids or '') .. '\n', '\n' .. id .. '\n', 1, true) then
    return nil
  end
else  -- nothing checked: the reserve reads the account itself
  local a = ARGV.account or call('HMGET', acct, unpack(RESERVE_FIELDS))
  if a[2] ~= 'active' then return nil end
  mode, status, balance, credit_limit, reserved, max_calls, due =
    a[1], a[2], a[3], a[4], a[5], a[6], a[7]
end
if not mode then return nil end  -- reserve.lua: unknown_account
local now, low = ARGV[3] + 0, tonumber(due)
if not low or low <= now then return nil end  -- expired leases to sweep first
local deadline = ARGV[5]
if deadline ~= '0' then
  local t = call('TIME')
  -- Redis's clock before the deadline's second (decimal strings of one length compare
  -- as their numbers): not late, no conversion; else compared in ms
  local second = string.sub(deadline, 1, -4)
  if #t[1] ~= #second or t[1] >= second then
    if t[1] * 1000 + math.floor(t[2] / 1000) > deadline + 0 then
      return nil  -- late
    end
  end
end
-- num(), written out (a Lua call fewer each)
local amount_s = ARGV[2]
local amount, held = amount_s + 0, reserved and tonumber(reserved) or 0
local available = (balance and tonumber(balance) or 0) - held
if mode == 'postpaid' then available = available + num(credit_limit) end  -- credit_floor
if available < amount then return nil end  -- partial or refused (amount >= 1)
if max_calls and max_calls ~= '0' then
  local most = num(max_calls)
  if most > 0 and call('ZCARD', KEYS[3]) >= most then return nil end
end
if call('HSETNX', KEYS[2], sid, amount_s) == 0 then return nil end  -- a hold
local until_ = ARGV[4]  -- the lease's end (now + lease), as text: no format
call('ZADD', KEYS[3], until_, sid)
local after = s(held + amount)
if until_ + 0 <= low then  -- the account's lowest lease now: written (else unchanged)
  call('HSET', acct, 'reserved', after, 'updated_ms', ARGV[3], 'lease_due', until_)
else
  call('HSET', acct, 'reserved', after, 'updated_ms', ARGV[3])
end
if c[6] == '1' then
  audit(KEYS[4], c[4], now, c[3], 'reserve', '',
        {balance = balance, reserved = s(held), status = status},
        {balance = balance, reserved = after, status = status},
        {'session', sid, 'amount', amount_s, 'asked', amount_s})
end
return amount, available - amount
