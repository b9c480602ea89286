-- release: end a session; commit its final cost if given, drop the rest of its hold,
-- and leave a tombstone (closed=1, with a TTL) so replays never charge again.
-- KEYS[1] acct hash   KEYS[2] holds hash   KEYS[3] leases zset   KEYS[4] audit stream
-- KEYS[5] session hash (debited, closed)
-- ARGV[1] session id  ARGV[2] final cumulative cost micros, or '' for none
-- ARGV[3] now ms  ARGV[4] who  ARGV[5] audit max entries  ARGV[6] session key ttl ms
-- ARGV[7] max expired holds of the account to reclaim first
-- ARGV[8] 'cap': debit at most the session's hold plus what the account has available
--   (balance - other holds - floor): a call within what chargingd allowed never takes
--   an account below its floor | anything else: the whole final cost (an overrun's
--   debt is committed, never dropped)
-- Returns {'ok'|'closed', debited, total_debited, balance, overrun 0|1} | {'unknown'}
-- Expired leases of the account are reclaimed first only once its lease_due says one
-- may be (common.lua), as reserve.lua does; and before a 'cap' would take less than the
-- final cost (a lapsed hold of an older version, which did not lower lease_due, must not
-- shrink the room).
local acct, holds, leases, stream, sess = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, now, who, maxlen = ARGV[1], tonumber(ARGV[3]), ARGV[4], ARGV[5]

local a = redis.call('HMGET', acct, 'mode', 'status', 'status_reason', 'balance',
                     'credit_limit', 'reserved', 'debits', 'topups', 'lease_due')
if not a[1] then return {'unknown'} end
local balance = num(a[4])
local st = redis.call('HMGET', sess, 'debited', 'closed')
local done = num(st[1])
if st[2] == '1' then return {'closed', 0, done, balance, 0} end

local reserved, due, swept, reclaimed = num(a[6]), tonumber(a[9]), false, 0
local function sweep()
  reclaimed, reserved, due = reclaim_due(acct, holds, leases, stream, maxlen, now, who,
                                 tonumber(ARGV[7]), reserved)
  swept = true
end
if not due or due <= now then sweep() end
local hold = num(redis.call('HGET', holds, sid))
local credit_limit = num(a[5])
local floor = credit_floor(a[1], credit_limit)
if not swept and ARGV[8] == 'cap' and ARGV[2] ~= ''
   and tonumber(ARGV[2]) - done > balance - (reserved - hold) - floor then
  sweep()
  hold = num(redis.call('HGET', holds, sid))
end
local before = {balance = a[4], reserved = s(reserved), status = a[2], status_reason = a[3]}
local debit = 0
if ARGV[2] ~= '' and tonumber(ARGV[2]) > done then
  debit = tonumber(ARGV[2]) - done
  if ARGV[8] == 'cap' then
    local room = balance - (reserved - hold) - floor
    if room < 0 then room = 0 end
    if debit > room then debit = room end
  end
  done = done + debit
end
local rest = hold - debit
if rest < 0 then rest = 0 end
reserved = reserved - hold
balance = balance - debit
local overrun = 0
if debit > 0 and balance < floor then overrun = 1 end
local status, reason = credit_rule(a[1], a[2], a[3], balance, credit_limit)
redis.call('HDEL', holds, sid)
redis.call('ZREM', leases, sid)
local debits = s(num(a[7]) + debit)
if swept then
  redis.call('HSET', acct, 'balance', s(balance), 'reserved', s(reserved),
             'debits', debits, 'status', status, 'status_reason', reason,
             'updated_ms', s(now), 'lease_due', s(due))
else
  redis.call('HSET', acct, 'balance', s(balance), 'reserved', s(reserved),
             'debits', debits, 'status', status, 'status_reason', reason,
             'updated_ms', s(now))
end
journal(acct, now, 'debit', -debit, sid, '', who, '', {s(balance), a[8], debits})
redis.call('HSET', sess, 'debited', s(done), 'closed', '1')
redis.call('PEXPIRE', sess, ARGV[6])
audit(stream, maxlen, now, who, 'release', '', before,
      {balance = s(balance), reserved = s(reserved), status = status, status_reason = reason},
      {'session', sid, 'amount', s(debit), 'cumulative', s(done), 'released', s(rest),
       'overrun', s(overrun)})
return {'ok', debit, done, balance, overrun}
