-- reserve_first: account_check.lua then reserve.lua for the common case of a new call,
-- in one straight line: the first FULL grant of a session the ledger has never seen
-- (no ledger session hash, no hold), on an active account with the money (or credit)
-- for all of it, no expired lease due, not late. Embedded by the fused authorize
-- (sessions/lua/session_authorize.lua, plain or wrapped by the fraud rules'
-- session_authorize_fraud.lua) as ledger_reserve_first(KEYS, ARGV), and only with
-- ARGV.c (its per-process arguments in its code). ARGV.account (the wrapper's
-- account_check read them, nothing written since): the account's RESERVE_FIELDS, taken
-- instead of reading them when nothing is to be checked here.
-- Returns nil when the call is anything else: then it has WRITTEN NOTHING (its only
-- command that could write, HSETNX, is its last check and writes nothing when it
-- fails) and the caller runs account_check.lua and reserve.lua, which decide it.
-- Otherwise what they would have returned: the reserve's {'ok', amount, available after,
-- 0}, having written the same fields, hold, lease and audit entry (the equality of
-- both paths, key by key: tests/sessions/test_reserve_first.py).
-- KEYS[1..5] reserve.lua's
-- ARGV[1] session id  ARGV[2] amount  ARGV[3] now ms  ARGV[4] lease ms  ARGV[5] deadline
--   (reserve.lua's ARGV[1..4] and [11], as the plain authorize sends them)
-- ARGV[9..13] account_check.lua's ARGV[1..5]
-- ARGV.c reserve.lua's ARGV[5..10], [12] (partial, new_session, who, audit max,
--   reclaims, audit this hold, refusal ttl)
local c = ARGV.c
local check = ARGV[9]
if c[2] ~= '1' or check == 'status' then return nil end
local a, mode, status, balance, credit_limit, reserved, max_calls, due
if check == '1' then
  a = redis.call('HMGET', KEYS[1], 'tariff', 'currency', 'status', 'status_reason',
                 'identities', 'mode', 'balance', 'credit_limit', 'reserved', 'max_calls',
                 'lease_due')
  -- account_check.lua's checks: anything but a match goes to it
  if a[1] ~= ARGV[10] or a[2] ~= ARGV[11] or a[3] ~= 'active' then return nil end
  if ARGV[13] ~= '' and a[6] ~= ARGV[13] then return nil end
  if ARGV[12] ~= '' and not string.find('\n' .. (a[5] or '') .. '\n', '\n' .. ARGV[12] .. '\n',
                                        1, true) then
    return nil
  end
  mode, status, balance, credit_limit, reserved, max_calls, due =
    a[6], a[3], a[7], a[8], a[9], a[10], a[11]
else  -- nothing checked: the reserve reads the account itself
  a = ARGV.account or redis.call('HMGET', KEYS[1], unpack(RESERVE_FIELDS))
  if a[2] ~= 'active' then return nil end
  mode, status, balance, credit_limit, reserved, max_calls, due =
    a[1], a[2], a[3], a[4], a[5], a[6], a[7]
end
if not mode then return nil end  -- reserve.lua: unknown_account
-- A ledger session hash (closed, a refusal remembered): reserve.lua
if redis.call('EXISTS', KEYS[5]) == 1 then return nil end
local now = tonumber(ARGV[3])
due = tonumber(due)
if not due or due <= now then return nil end  -- expired leases to sweep first
local deadline = ARGV[5]
if deadline ~= '0' then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(deadline) then
    return nil  -- late
  end
end
local amount, held = tonumber(ARGV[2]), num(reserved)
local available = num(balance) - held - credit_floor(mode, num(credit_limit))
if available < amount then return nil end  -- partial or refused (amount >= 1)
local most = num(max_calls)
if most > 0 and redis.call('ZCARD', KEYS[3]) >= most then return nil end
-- ARGV[2] is the amount as the ledger wrote it (a decimal integer: s(amount))
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return nil end  -- a hold
local expiry = now + tonumber(ARGV[4])
local until_ = s(expiry)
redis.call('ZADD', KEYS[3], until_, ARGV[1])
local after, lease_due = s(held + amount), until_
if due < expiry then lease_due = s(due) end
redis.call('HSET', KEYS[1], 'reserved', after, 'updated_ms', ARGV[3], 'lease_due', lease_due)
if c[6] == '1' then
  audit(KEYS[4], c[4], now, c[3], 'reserve', '',
        {balance = balance, reserved = s(held), status = status},
        {balance = balance, reserved = after, status = status},
        {'session', ARGV[1], 'amount', ARGV[2], 'asked', ARGV[2]})
end
return {'ok', amount, available - amount, 0}
