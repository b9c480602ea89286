-- correct: move a released session's debit to a new cumulative cost, once. A Stop that
-- came after its session was closed provisionally (reaped as stale, its gateway
-- restarted) or after a closer died between the release and the CDR: the ledger
-- ends with what the gateway's own report costs (DESIGN invariant 4).
-- KEYS[1] acct hash   KEYS[2] holds hash   KEYS[3] leases zset   KEYS[4] audit stream
-- KEYS[5] session hash (debited, closed, target)
-- KEYS[6] (optional) the call's usage hash (usage.lua): see "rerated" below
-- ARGV[1] session id  ARGV[2] target cumulative cost micros  ARGV[3] now ms  ARGV[4] who
-- ARGV[5] why  ARGV[6] audit max entries  ARGV[7] session key ttl ms
-- ARGV[8] 'cap': a debit is cut to what the account has available (balance - holds -
--   floor) | 'debt': taken in full, below the floor if it must (an overrun)
-- Returns {'ok'|'dup', moved, total_debited, balance, overrun 0|1} | {'unknown'} | {'range'}
--       | {'open', 0, debited, balance, 0}: the session was never released (nothing to
--         correct: close it instead) or its record is gone
-- moved > 0 was debited, < 0 refunded. 'dup': this target was applied already.
-- A refund takes back debits (net usage); one larger than the debits on record counts
-- as a top-up, like usage.lua does.
local acct, stream, sess = KEYS[1], KEYS[4], KEYS[5]
local sid, target, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local a = redis.call('HMGET', acct, 'mode', 'status', 'status_reason', 'balance',
                     'credit_limit', 'reserved', 'debits', 'topups')
if not a[1] then return {'unknown'} end
local balance = num(a[4])
local st = redis.call('HMGET', sess, 'debited', 'closed', 'target')
local done = num(st[1])
if st[2] ~= '1' then return {'open', 0, done, balance, 0} end
-- rerated: a rerate moved the call's charge after its provisional close; its usage hash
-- holds what the ledger charged for the call in all (the session's debit + the rerate's
-- move). The correction moves from there and writes it back: else the rerate's move
-- stayed in the balance while the corrected CDR said the session's charge alone.
local ukey, charged = KEYS[6], done
local rerated = false
if ukey then rerated = redis.call('HGET', ukey, 'charged') end
if rerated then charged = num(rerated) end
if st[3] == ARGV[2] then return {'dup', 0, charged, balance, 0} end

local credit_limit = num(a[5])
local floor = credit_floor(a[1], credit_limit)
local move = target - charged
if move > 0 and ARGV[8] == 'cap' then
  local room = balance - num(a[6]) - floor
  if room < 0 then room = 0 end
  if move > room then move = room end
end
local before = {balance = a[4], reserved = a[6], status = a[2], status_reason = a[3]}
balance = balance - move
local debits, topups = num(a[7]) + move, num(a[8])
if debits < 0 then topups = topups - debits; debits = 0 end
if math.abs(balance) > MAX_TOTAL_MICROS or debits > MAX_TOTAL_MICROS
   or topups > MAX_TOTAL_MICROS then
  return {'range'}
end
local overrun = 0
if move > 0 and balance < floor then overrun = 1 end
local status, reason = credit_rule(a[1], a[2], a[3], balance, credit_limit)
redis.call('HSET', acct, 'balance', s(balance), 'debits', s(debits), 'topups', s(topups),
           'status', status, 'status_reason', reason, 'updated_ms', s(now))
journal(acct, now, 'correct', -move, sid, '', ARGV[4], ARGV[5])
redis.call('HSET', sess, 'debited', s(done + move), 'target', ARGV[2])
redis.call('PEXPIRE', sess, ARGV[7])
if rerated then
  redis.call('HSET', ukey, 'charged', s(charged + move), 'cost', ARGV[2], 'reason', '')
end
audit(stream, ARGV[6], now, ARGV[4], 'correct', ARGV[5], before,
      {balance = s(balance), reserved = a[6], status = status, status_reason = reason},
      {'session', sid, 'amount', s(move), 'cumulative', s(charged + move),
       'target', ARGV[2], 'overrun', s(overrun)})
return {'ok', move, charged + move, balance, overrun}
