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
-- Each figure is formatted once (s()): the same writes, entries and reply as before
-- (docs/performance.md, round 13a).
local acct, holds, leases, stream, sess = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, now, who, maxlen = ARGV[1], tonumber(ARGV[3]), ARGV[4], ARGV[5]

local a = redis.call('HMGET', acct, 'mode', 'status', 'status_reason', 'balance',
                     'credit_limit', 'reserved', 'debits', 'topups', 'lease_due')
if not a[1] then return {'unknown'} end
local balance = num(a[4])
local st = redis.call('HMGET', sess, 'debited', 'closed')
local done = num(st[1])
if st[2] == '1' then return {'closed', 0, done, balance, 0} end

-- (the sweep written out twice, not as a local function: a closure per call)
local reserved, due, swept = num(a[6]), tonumber(a[9]), false
if not due or due <= now then
  local _
  _, reserved, due = reclaim_due(acct, holds, leases, stream, maxlen, now, who,
                                 tonumber(ARGV[7]), reserved)
  swept = true
end
local hold = num(redis.call('HGET', holds, sid))
local credit_limit = num(a[5])
local floor = credit_floor(a[1], credit_limit)
local final = ARGV[2] ~= '' and tonumber(ARGV[2])  -- false: no final cost
if not swept and ARGV[8] == 'cap' and final
   and final - done > balance - (reserved - hold) - floor then
  local _
  _, reserved, due = reclaim_due(acct, holds, leases, stream, maxlen, now, who,
                                 tonumber(ARGV[7]), reserved)
  swept = true
  hold = num(redis.call('HGET', holds, sid))
end
local before_s = (a[4] or '') .. ',' .. s(reserved) .. ',' .. (a[2] or '') .. ','
                 .. (a[3] or '')
local debit = 0
if final and final > done then
  debit = final - done
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
local debits = num(a[7]) + debit
local balance_s, reserved_s, now_s, debits_s = s(balance), s(reserved), s(now), s(debits)
if swept then
  redis.call('HSET', acct, 'balance', balance_s, 'reserved', reserved_s,
             'debits', debits_s, 'status', status, 'status_reason', reason,
             'updated_ms', now_s, 'lease_due', s(due))
else
  redis.call('HSET', acct, 'balance', balance_s, 'reserved', reserved_s,
             'debits', debits_s, 'status', status, 'status_reason', reason,
             'updated_ms', now_s)
end
journal_x(acct, now_s, 'debit', -debit, sid, '', who, '', balance_s, num(a[8]) - debits)
local done_s = s(done)
redis.call('HSET', sess, 'debited', done_s, 'closed', '1')
redis.call('PEXPIRE', sess, ARGV[6])
audit_x(stream, maxlen, now_s, who, 'release', '', before_s,
        balance_s .. ',' .. reserved_s .. ',' .. (status or '') .. ',' .. (reason or ''),
        'x.session', sid, 'x.amount', s(debit), 'x.cumulative', done_s, 'x.released', s(rest),
        'x.overrun', overrun == 1 and '1' or '0')
return {'ok', debit, done, balance, overrun}
