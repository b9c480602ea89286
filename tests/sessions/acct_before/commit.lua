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
--   it, whether there was one}
local acct, holds, leases, stream, sess = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, cum, now, who, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]

local a = redis.call('HMGET', acct, 'mode', 'status', 'status_reason', 'balance',
                     'credit_limit', 'reserved', 'debits', 'topups', 'max_calls', 'lease_due')
if not a[1] then return {'unknown'} end
local give = ARGV.account ~= nil
-- RESERVE_FIELDS (common.lua) as they stand until this script writes the account
if give then ARGV.account = {a[1], a[2], a[4], a[5], a[6], a[9], a[10]} end
local balance = num(a[4])
local st
if give then
  st = redis.call('HMGET', sess, 'debited', 'closed', 'refused')
  ARGV.known = {st[2], st[3]}
else
  st = redis.call('HMGET', sess, 'debited', 'closed')
end
local done = num(st[1])
if st[2] == '1' then return {'closed', 0, done, balance, 0} end
local debit = cum - done
if debit <= 0 then return {'dup', 0, done, balance, 0} end

local raw_hold = redis.call('HGET', holds, sid)
local hold = num(raw_hold)
if give then ARGV.hold = {hold, raw_hold ~= false} end
local credit_limit = num(a[5])
local floor = credit_floor(a[1], credit_limit)
if ARGV[7] == 'cap' then
  local room = balance - (num(a[6]) - hold) - floor
  if room < 0 then room = 0 end
  if debit > room then debit = room end
  if debit <= 0 then return {'ok', 0, done, balance, 0} end
end
-- The debit comes out of the session's own hold first.
local take = debit
if take > hold then take = hold end
if take > 0 then
  redis.call('HSET', holds, sid, s(hold - take))
  if give then ARGV.hold = {hold - take, true} end
end
local reserved = num(a[6]) - take
local before = {balance = a[4], reserved = a[6], status = a[2], status_reason = a[3]}
balance = balance - debit
local overrun = 0
if balance < floor then overrun = 1 end
local status, reason = credit_rule(a[1], a[2], a[3], balance, credit_limit)
local debits = s(num(a[7]) + debit)
redis.call('HSET', acct, 'balance', s(balance), 'reserved', s(reserved),
           'debits', debits, 'status', status, 'status_reason', reason,
           'updated_ms', s(now))
journal(acct, now, 'debit', -debit, sid, '', who, '', {s(balance), a[8], debits})
if give then ARGV.account = {a[1], status, s(balance), a[5], s(reserved), a[9], a[10]} end
done = done + debit
redis.call('HSET', sess, 'debited', s(done))
redis.call('PEXPIRE', sess, ARGV[6])
audit(stream, maxlen, now, who, 'commit', '', before,
      {balance = s(balance), reserved = s(reserved), status = status, status_reason = reason},
      {'session', sid, 'amount', s(debit), 'cumulative', s(done), 'overrun', s(overrun)})
return {'ok', debit, done, balance, overrun}
