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
-- Otherwise what they would have returned: the reserve's {'ok', amount, available after,
-- 0}, having written the same fields, hold, lease and audit entry (the equality of
-- both paths, key by key: tests/sessions/test_reserve_first.py).
-- KEYS[1..5] reserve.lua's   KEYS[6] a key of the caller that must not exist either
--   (the session's record: a retransmission is the caller's to answer)
-- ARGV[1] session id  ARGV[2] amount  ARGV[3] now ms  ARGV[4] lease ms  ARGV[5] deadline
--   (reserve.lua's ARGV[1..4] and [11], as the plain authorize sends them)
-- ARGV[7..8] account_check.lua's ARGV packed (StepBuilder.first_check): ARGV[7] '' (nothing
--   to check) or "TARIFF\0CURRENCY\0MODE" (MODE '': any), ARGV[8] '' or "\nIDENTITY\n"
-- c: reserve.lua's ARGV[5..10], [12] (partial, new_session, who, audit max, reclaims,
--   audit this hold, refusal ttl): the authorize's CONF (sessions/fused.py)
-- Every amount and time it reads is a decimal integer as the ledger writes them (s():
-- the account's fields; str(int): the arguments), so it writes them back as read
-- where the general path writes s(tonumber(x)): the same text. The arguments and
-- TIME's reply become numbers by arithmetic (one conversion; tonumber() makes two).
if c[2] ~= '1' or redis.call('EXISTS', KEYS[5], KEYS[6]) ~= 0 then return nil end
local check = ARGV[7]
local mode, status, balance, credit_limit, reserved, max_calls, due
if check ~= '' then
  -- a checked prepaid account: no credit limit to read (the HMGET's 7th field is the
  -- reserved amount, then max_calls and lease_due: one place earlier)
  local pre = string.sub(check, -8) == '\0prepaid'
  local a
  if pre then
    a = redis.call('HMGET', KEYS[1], 'tariff', 'currency', 'status', 'identities',
                   'mode', 'balance', 'reserved', 'max_calls', 'lease_due')
  else
    a = redis.call('HMGET', KEYS[1], 'tariff', 'currency', 'status', 'identities',
                   'mode', 'balance', 'credit_limit', 'reserved', 'max_calls', 'lease_due')
  end
  -- account_check.lua's checks: anything but a match goes to it
  if a[3] ~= 'active' or not a[5] then return nil end
  if string.byte(check, -1) == 0 then  -- any mode
    if (a[1] or '') .. '\0' .. (a[2] or '') .. '\0' ~= check then return nil end
  elseif (a[1] or '') .. '\0' .. (a[2] or '') .. '\0' .. a[5] ~= check then
    return nil
  end
  if ARGV[8] ~= '' and not string.find('\n' .. (a[4] or '') .. '\n', ARGV[8], 1, true) then
    return nil
  end
  if pre then
    mode, status, balance, reserved, max_calls, due = a[5], a[3], a[6], a[7], a[8], a[9]
  else
    mode, status, balance, credit_limit, reserved, max_calls, due =
      a[5], a[3], a[6], a[7], a[8], a[9], a[10]
  end
else  -- nothing checked: the reserve reads the account itself
  local a = ARGV.account or redis.call('HMGET', KEYS[1], unpack(RESERVE_FIELDS))
  if a[2] ~= 'active' then return nil end
  mode, status, balance, credit_limit, reserved, max_calls, due =
    a[1], a[2], a[3], a[4], a[5], a[6], a[7]
end
if not mode then return nil end  -- reserve.lua: unknown_account
local now, low = ARGV[3] + 0, tonumber(due)
if not low or low <= now then return nil end  -- expired leases to sweep first
local deadline = ARGV[5]
if deadline ~= '0' then
  local t = redis.call('TIME')
  -- Redis's clock before the deadline's second (decimal strings of one length compare
  -- as their numbers): not late, no conversion; else compared in ms
  local second = string.sub(deadline, 1, -4)
  if #t[1] ~= #second or t[1] >= second then
    if t[1] * 1000 + math.floor(t[2] / 1000) > deadline + 0 then
      return nil  -- late
    end
  end
end
local amount, held = ARGV[2] + 0, num(reserved)
local available = num(balance) - held
if mode == 'postpaid' then available = available + num(credit_limit) end  -- credit_floor
if available < amount then return nil end  -- partial or refused (amount >= 1)
if max_calls and max_calls ~= '0' then
  local most = num(max_calls)
  if most > 0 and redis.call('ZCARD', KEYS[3]) >= most then return nil end
end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return nil end  -- a hold
local expiry = now + ARGV[4]
local until_ = s(expiry)
redis.call('ZADD', KEYS[3], until_, ARGV[1])
local after = s(held + amount)
if expiry <= low then  -- the account's lowest lease now: written (else unchanged)
  redis.call('HSET', KEYS[1], 'reserved', after, 'updated_ms', ARGV[3], 'lease_due', until_)
else
  redis.call('HSET', KEYS[1], 'reserved', after, 'updated_ms', ARGV[3])
end
if c[6] == '1' then
  audit(KEYS[4], c[4], now, c[3], 'reserve', '',
        {balance = balance, reserved = s(held), status = status},
        {balance = balance, reserved = after, status = status},
        {'session', ARGV[1], 'amount', ARGV[2], 'asked', ARGV[2]})
end
return {'ok', amount, available - amount, 0}
