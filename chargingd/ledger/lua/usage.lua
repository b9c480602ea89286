-- usage: the money of one call the ledger did not see live (a mediated switch record),
-- or the re-pricing of any charged call: idempotent on the call (source, call id).
-- KEYS[1] acct hash   KEYS[2] usage hash {a:ID}:u:... (charged, cost, reason)
-- KEYS[3] audit stream   KEYS[4] (rerate) the session hash of a live call of that id
-- ARGV[1] mode  ARGV[2] amount  ARGV[3] base  ARGV[4] insufficient  ARGV[5] currency
-- ARGV[6] now ms  ARGV[7] who  ARGV[8] why  ARGV[9] audit max entries  ARGV[10] ttl ms
-- ARGV[11] source  ARGV[12] call id
-- Returns {'ok'|'replay', charged, reason, balance, moved} | {'unknown'}
--       | {'currency', account currency} | {'range'} | {'stale', charged}
-- moved: what this call of the script debited (> 0) or refunded (< 0).
--
-- mode 'charge': debit the rated cost (amount) once; a known call is a replay.
-- mode 'rerate': move the call's charge to the target (amount >= 0): debit or refund
--   the difference; a refund never exceeds what was charged. base: what the call had
--   charged when its key is gone (live calls, expired keys); the key wins when present.
-- insufficient (the money is not available: balance - holds - floor): 'debt' takes it
--   anyway (the call happened, reason 'debt') | 'cap' takes what is available ('capped').
-- The call's key remembers what the ledger moved for it; this script alone writes it.
local acct, key, stream = KEYS[1], KEYS[2], KEYS[3]
local mode, amount, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[6])
local a = redis.call('HMGET', acct, 'mode', 'status', 'status_reason', 'balance',
                     'credit_limit', 'currency', 'debits', 'reserved', 'topups')
if not a[1] then return {'unknown'} end
if ARGV[5] ~= '' and ARGV[5] ~= a[6] then return {'currency', a[6]} end
local balance = num(a[4])
local prev = redis.call('HMGET', key, 'charged', 'reason')
local current = num(prev[1])
if mode == 'charge' then
  if prev[1] then return {'replay', prev[1], prev[2] or '', s(balance), '0'} end
elseif prev[1] then
  if current == amount then return {'replay', prev[1], prev[2] or '', s(balance), '0'} end
  -- rerated before, then corrected by a late Stop (correct.lua wrote the key) whose
  -- revision is not in the database yet: the CDR priced (base) is stale, as below
  if KEYS[4] and current ~= tonumber(ARGV[3])
     and redis.call('HEXISTS', KEYS[4], 'target') == 1 then
    return {'stale', prev[1]}
  end
else
  current = tonumber(ARGV[3])
  -- A live call corrected by a late Stop after the CDR the rerate priced (base) was
  -- stored: its newer revision, not yet in the database, says another charge. Moving
  -- from base would leave the difference in the balance and in no CDR.
  if KEYS[4] then
    local st = redis.call('HMGET', KEYS[4], 'debited', 'closed', 'target')
    if st[2] == '1' and st[3] and num(st[1]) ~= current then return {'stale', st[1]} end
  end
end

local target, reason = amount, ''
if mode == 'rerate' then reason = 'rerate' end
local floor = credit_floor(a[1], num(a[5]))
local move = target - current
if move > 0 then
  local available = balance - num(a[8]) - floor
  if available < 0 then available = 0 end
  if move > available and ARGV[4] == 'cap' then
    move = available
    target = current + move
    reason = 'capped'
  elseif move > available then
    reason = 'debt'
  end
end
balance = balance - move
-- debits is net usage: a rerate refund takes back its debit; a refund larger than the
-- debits on record (history from before the ledger) counts as a top-up instead.
local debits, topups = num(a[7]) + move, num(a[9])
if debits < 0 then topups = topups - debits; debits = 0 end
if math.abs(balance) > MAX_TOTAL_MICROS or debits > MAX_TOTAL_MICROS
   or topups > MAX_TOTAL_MICROS then
  return {'range'}
end
local before = snapshot(acct)
local status, why_status = credit_rule(a[1], a[2], a[3], balance, num(a[5]))
redis.call('HSET', acct, 'balance', s(balance), 'debits', s(debits), 'topups', s(topups),
           'status', status, 'status_reason', why_status, 'updated_ms', s(now))
local what = 'usage'
if mode == 'rerate' then what = 'rerate' end
journal(acct, now, what, -move, ARGV[12], ARGV[11], ARGV[7], ARGV[8])
audit(stream, ARGV[9], now, ARGV[7], what, ARGV[8], before, snapshot(acct),
      {'source', ARGV[11], 'call', ARGV[12], 'amount', s(move), 'cumulative', s(target),
       'cost', ARGV[2], 'reason', reason})
redis.call('HSET', key, 'charged', s(target), 'cost', ARGV[2], 'reason', reason)
redis.call('PEXPIRE', key, ARGV[10])
return {'ok', s(target), reason, s(balance), s(move)}
