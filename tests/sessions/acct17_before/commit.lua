-- commit: debit a session's cumulative cost minus what it already debited.
-- KEYS[1] acct hash   KEYS[2] holds hash   KEYS[3] leases zset   KEYS[4] audit stream
-- KEYS[5] session hash (debited, closed)
-- ARGV[1] session id  ARGV[2] cumulative cost micros  ARGV[3] now ms  ARGV[4] who
-- ARGV[5] audit max entries  ARGV[6] session key ttl ms
-- ARGV[7] 'cap': debit at most the session's hold plus what the account has available
--   (balance - other holds - floor); the rest stays owed to a later commit or the
--   release | anything else: the whole difference, below the floor if it must
-- Returns {'ok'|'dup'|'closed', debited, total_debited, balance, overrun 0|1} | {'unknown'}
-- ARGV.account (embedded: session_renew.lua sets it true) replaced by the account's
--   RESERVE_FIELDS as this commit left them, for the reserve that follows in the same
--   script (it need not read the account again); with it, for that reserve too:
--   ARGV.known the session hash's {closed, refused} (this commit writes neither) and,
--   once this commit read the session's hold, ARGV.hold {the hold as this commit left
--   it, whether there was one}; once it debited, ARGV.account's balance_n, reserved_n
--   and credit_limit_n are those three as numbers (the reserve need not parse them)
-- Each figure is formatted once (s()) and each stored one parsed once (docs/performance.md,
-- round 13a): the same writes, entries and reply as before.
local acct, holds, leases, stream, sess = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, cum, now, who, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]

local a = redis.call('HMGET', acct, 'mode', 'status', 'status_reason', 'balance',
                     'credit_limit', 'reserved', 'debits', 'topups', 'max_calls', 'lease_due')
if not a[1] then return {'unknown'} end
local give = ARGV.account ~= nil
local balance = num(a[4])
-- {closed, refused, debited}: the first two are ARGV.known as the reserve reads them
local st = redis.call('HMGET', sess, 'closed', 'refused', 'debited')
if give then ARGV.known = st end
local done = num(st[3])
-- RESERVE_FIELDS (common.lua) as they stand where this script writes nothing
if st[1] == '1' then
  if give then ARGV.account = {a[1], a[2], a[4], a[5], a[6], a[9], a[10]} end
  return {'closed', 0, done, balance, 0}
end
local debit = cum - done
if debit <= 0 then
  if give then ARGV.account = {a[1], a[2], a[4], a[5], a[6], a[9], a[10]} end
  return {'dup', 0, done, balance, 0}
end

local raw_hold = redis.call('HGET', holds, sid)
local hold = num(raw_hold)
local credit_limit = num(a[5])
local floor = credit_floor(a[1], credit_limit)
local reserved = num(a[6])
if ARGV[7] == 'cap' then
  local room = balance - (reserved - hold) - floor
  if room < 0 then room = 0 end
  if debit > room then debit = room end
  if debit <= 0 then
    if give then
      ARGV.account = {a[1], a[2], a[4], a[5], a[6], a[9], a[10]}
      ARGV.hold = {hold, raw_hold ~= false}
    end
    return {'ok', 0, done, balance, 0}
  end
end
-- The debit comes out of the session's own hold first.
local take = debit
if take > hold then take = hold end
if take > 0 then
  redis.call('HSET', holds, sid, s(hold - take))
  if give then ARGV.hold = {hold - take, true} end
elseif give then
  ARGV.hold = {hold, raw_hold ~= false}
end
reserved = reserved - take
balance = balance - debit
local overrun = 0
if balance < floor then overrun = 1 end
local status, reason = credit_rule(a[1], a[2], a[3], balance, credit_limit)
local debits = num(a[7]) + debit
local balance_s, reserved_s, now_s, debits_s = s(balance), s(reserved), s(now), s(debits)
redis.call('HSET', acct, 'balance', balance_s, 'reserved', reserved_s,
           'debits', debits_s, 'status', status, 'status_reason', reason,
           'updated_ms', now_s)
journal_x(acct, now_s, 'debit', -debit, sid, '', who, '', balance_s, num(a[8]) - debits)
if give then
  ARGV.account = {a[1], status, balance_s, a[5], reserved_s, a[9], a[10],
                  balance_n = balance, reserved_n = reserved, credit_limit_n = credit_limit}
end
done = done + debit
local done_s = s(done)
redis.call('HSET', sess, 'debited', done_s)
redis.call('PEXPIRE', sess, ARGV[6])
audit_x(stream, maxlen, now_s, who, 'commit', '',
        (a[4] or '') .. ',' .. (a[6] or '') .. ',' .. (a[2] or '') .. ',' .. (a[3] or ''),
        balance_s .. ',' .. reserved_s .. ',' .. (status or '') .. ',' .. (reason or ''),
        'x.session', sid, 'x.amount', s(debit), 'x.cumulative', done_s,
        'x.overrun', overrun == 1 and '1' or '0')
return {'ok', debit, done, balance, overrun}
