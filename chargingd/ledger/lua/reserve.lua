-- reserve: set one session's hold (a lease) to what the account can give.
-- KEYS[1] acct hash   KEYS[2] holds hash (session -> micros)
-- KEYS[3] leases zset (session -> expiry ms)   KEYS[4] audit stream   KEYS[5] session hash
-- ARGV[1] session id  ARGV[2] amount micros  ARGV[3] now ms  ARGV[4] lease ms
-- ARGV[5] partial 0|1 ARGV[6] new_session 0|1 ARGV[7] who  ARGV[8] audit max entries
-- ARGV[9] max expired holds to reclaim first  ARGV[10] audit this hold 0|1
-- ARGV[11] deadline ms on Redis's own clock (TIME), '0' none (see below)
-- ARGV[12] how long a new session's refusal is remembered (ms)
-- ARGV.account (embedded: a table) the RESERVE_FIELDS account_check.lua read (commit.lua's:
--   with balance_n, reserved_n, credit_limit_n, three of them as numbers); absent: read
--   here. Only KEYS[1..5] and ARGV[1..12] are read: a caller may pass its own KEYS, ARGV
-- Returns {'ok', granted, available_after, reclaimed}
--       | {'refused', reason, available, reclaimed} | {'closed'}
-- ARGV.known, ARGV.hold (embedded: tables; commit.lua's, for session_renew.lua, nothing
--   written to them since): the session hash's {closed, refused} and the session's
--   {hold, leased}, as this script would read them; absent: read here. The hold is
--   read again when this reserve's sweep reclaimed a lease (it may have been this one)
-- ARGV[11]: a new session's reserve that runs later than this (its caller gave up and
-- answered "charging unavailable", e.g. Redis was stopped) refuses itself ('late')
-- instead of holding money. ARGV[12]: a retransmitted request, on any daemon, gets the
-- same answer.
-- ARGV.c (embedded: a table; sessions/fused.py, the plain authorize) the values of
--   ARGV[5..10] and ARGV[12] of this process, in that order, kept in the script's code:
--   then the caller sends ARGV[1..4] and the deadline (ARGV[11]) as ARGV[5] only
-- ARGV.pending (embedded: a table; commit.lua's, for session_renew.lua): the commit's
--   deferred writes of the session's hold and the account's fields (commit.lua): made
--   before this script's sweep reads them (steps.flush), or merged into its grant's
--   own writes of the hold and the account; ARGV.pending is then set to nil (else the
--   caller makes them: a refusal, a closed session)
-- This script's steps with its figures as arguments (common.lua's RESERVE_STEPS: made
-- on the first run, then kept).
local steps = RESERVE_STEPS
if not steps then
  steps = {}
  -- A new session's refusal, remembered: the same request gets the same answer (the
  -- lease_due a sweep found written first).
  function steps.refuse(acct, sess, swept, due, new_session, refusal_ttl, reason, available,
                        reclaimed)
    if swept then redis.call('HSET', acct, 'lease_due', s(due)) end
    if new_session then
      redis.call('HSET', sess, 'refused', reason)
      redis.call('PEXPIRE', sess, refusal_ttl)
    end
    return {'refused', reason, available, reclaimed}
  end
  -- What the account can give a session (its own hold `own` counts), or why not.
  -- leased: the session has a hold (holds and leases always have the same members).
  function steps.decide(own, leased, balance, reserved, floor, status, new_session,
                        max_calls, leases, amount, partial)
    local available = balance - (reserved - own) - floor
    if available < 0 then available = 0 end
    if status ~= 'active' then return 'suspended', available end
    if new_session and max_calls > 0 and not leased
       and redis.call('ZCARD', leases) >= max_calls then
      return 'too_many_calls', available
    end
    if available <= 0 or (available < amount and not partial) then
      return 'insufficient_credit', available
    end
    return nil, available
  end
  -- A session's hold: its amount and whether there is one.
  function steps.hold(holds, sid)
    local raw = redis.call('HGET', holds, sid)
    return num(raw), raw ~= false
  end
  -- commit.lua's deferred writes (ARGV.pending, `p`), as it would have made them.
  function steps.flush(acct, holds, sid, p)
    if p[1] then redis.call('HSET', holds, sid, p[1]) end
    redis.call('HSET', acct, 'balance', p[2], 'reserved', p[3], 'debits', p[4],
               'status', p[5], 'status_reason', p[6], 'updated_ms', p[7])
  end
  RESERVE_STEPS = steps
end
local acct, holds, leases, stream, sess = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, amount, now, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local partial, new_session, who, maxlen, reclaim_n, audit_on, deadline, refusal_ttl
local c = ARGV.c
if c then
  partial, new_session, who, maxlen, reclaim_n, audit_on, deadline, refusal_ttl =
    c[1], c[2], c[3], c[4], c[5], c[6], ARGV[5], c[7]
else
  partial, new_session, who, maxlen, reclaim_n, audit_on, deadline, refusal_ttl =
    ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
end
partial, new_session, reclaim_n = partial == '1', new_session == '1', tonumber(reclaim_n)

local a = ARGV.account
if type(a) ~= 'table' then a = redis.call('HMGET', acct, unpack(RESERVE_FIELDS)) end
if not a[1] then return {'refused', 'unknown_account', 0, 0} end
local known = ARGV.known
if not known then known = redis.call('HMGET', sess, 'closed', 'refused') end
if known[1] == '1' then return {'closed'} end
-- A new session's refusal, remembered: the same request gets the same answer.
local swept, due = false, tonumber(a[7])
if new_session and known[2] and not redis.call('ZSCORE', leases, sid) then
  return {'refused', known[2], 0, 0}
end
if deadline ~= '0' then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(deadline) then
    return steps.refuse(acct, sess, swept, due, new_session, refusal_ttl, 'late', 0,
                          0)
  end
end

-- Expired leases first, once one may be due (lease_due: common.lua); the commit's
-- deferred writes before the sweep reads the account and the holds.
local pending = ARGV.pending
if pending == true then pending = nil end
local reclaimed, reserved = 0, a.reserved_n or num(a[5])
if not due or due <= now then
  if pending then
    steps.flush(acct, holds, sid, pending)
    pending, ARGV.pending = nil, nil
  end
  reclaimed, reserved, due = reclaim_due(acct, holds, leases, stream, maxlen, now, who,
                                         reclaim_n, reserved)
  swept = true
end
local balance = a.balance_n or num(a[3])
local floor = credit_floor(a[1], a.credit_limit_n or num(a[4]))
local max_calls = num(a[6])
-- What the account can give this session, or why not: steps.decide with this
-- script's figures as they stand; the session's own hold: steps.hold.
-- A new session has no hold of its own, so it is not read up front: a refusal reads
-- it first (it would count), and the grant writes the hold with HSETNX, which says
-- when there was one after all (a retransmitted request that no session record
-- answered): then it is read and the decision taken again with it, as a renewal's.
local own, leased, unread = 0, false, new_session
if not unread then
  local given = ARGV.hold
  if given and reclaimed == 0 then
    own, leased = given[1], given[2]
  else
    own, leased = steps.hold(holds, sid)
  end
end
local reason, available = steps.decide(own, leased, balance, reserved, floor, a[2],
                                         new_session, max_calls, leases, amount, partial)
if reason and unread then
  own, leased = steps.hold(holds, sid)
  unread = false
  if leased then
    reason, available = steps.decide(own, leased, balance, reserved, floor, a[2],
                                       new_session, max_calls, leases, amount, partial)
  end
end
-- Before refusing for want of money or of a call slot, or granting less than asked,
-- expired leases go back even if lease_due says none is due yet: a reserve of an older
-- version (a rolling upgrade) leases without lowering it, and its lapsed hold must not
-- refuse or cut short calls for the account's longest lease. A full grant never pays
-- for this read.
if not swept and (reason == 'too_many_calls' or reason == 'insufficient_credit'
                  or (not reason and available < amount)) then
  if pending then
    steps.flush(acct, holds, sid, pending)
    pending, ARGV.pending = nil, nil
  end
  reclaimed, reserved, due = reclaim_due(acct, holds, leases, stream, maxlen, now, who,
                                         reclaim_n, reserved)
  swept = true
  if reclaimed > 0 then
    reason, available = steps.decide(own, leased, balance, reserved, floor, a[2],
                                       new_session, max_calls, leases, amount, partial)
  end
end
if reason then
  return steps.refuse(acct, sess, swept, due, new_session, refusal_ttl, reason, available,
                        reclaimed)
end
local granted = amount
if granted > available then granted = available end
if not unread or redis.call('HSETNX', holds, sid, s(granted)) == 0 then
  if unread then
    own, leased = steps.hold(holds, sid)
    reason, available = steps.decide(own, leased, balance, reserved, floor, a[2],
                                       new_session, max_calls, leases, amount, partial)
    if reason then
      return steps.refuse(acct, sess, swept, due, new_session, refusal_ttl, reason,
                            available, reclaimed)
    end
    granted = amount
    if granted > available then granted = available end
  end
  redis.call('HSET', holds, sid, s(granted))
end
-- the reserved total before this grant: the audit's "before", formatted only if audited
local reserved_before = reserved
reserved = reserved - own + granted
local expiry = now + lease_ms
redis.call('ZADD', leases, s(expiry), sid)
-- lease_due written when it moves (swept, or this lease is the account's lowest now)
local moved = swept
if expiry < due then
  due, moved = expiry, true
end
local reserved_s = s(reserved)
if pending then  -- the commit's fields with this grant's (the hold's written above)
  ARGV.pending = nil
  if moved then
    redis.call('HSET', acct, 'balance', pending[2], 'reserved', reserved_s, 'debits',
               pending[4], 'status', pending[5], 'status_reason', pending[6],
               'updated_ms', pending[7], 'lease_due', s(due))
  else
    redis.call('HSET', acct, 'balance', pending[2], 'reserved', reserved_s, 'debits',
               pending[4], 'status', pending[5], 'status_reason', pending[6],
               'updated_ms', pending[7])
  end
elseif moved then
  redis.call('HSET', acct, 'reserved', reserved_s, 'updated_ms', s(now), 'lease_due', s(due))
else
  redis.call('HSET', acct, 'reserved', reserved_s, 'updated_ms', s(now))
end
if audit_on == '1' then
  audit(stream, maxlen, now, who, 'reserve', '',
        {balance = a[3], reserved = s(reserved_before), status = a[2]},
        {balance = a[3], reserved = reserved_s, status = a[2]},
        {'session', sid, 'amount', s(granted), 'asked', s(amount)})
end
return {'ok', granted, available - granted, reclaimed}
