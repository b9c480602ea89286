-- Shared prelude, prepended by ledger/codec.py to every money script (not a script itself).
-- Redis Lua numbers are doubles: amounts stay below 2^53 (checked in Python) and are
-- always written with %d, because tostring() switches to exponent form above 1e14.
local function s(n) return string.format('%d', n) end
local function num(v) if v then return tonumber(v) or 0 end return 0 end
-- MAX_TOTAL_MICROS (the largest balance or lifetime total, < 2^53) is defined above
-- this file by the ledger at load time, from chargingd.core.money (one value).

-- The account fields reserve.lua decides with, in its order (account_check.lua reads them
-- in its own HMGET and hands them to the reserve of the same script: one read of the
-- account for both).
local RESERVE_FIELDS = {'mode', 'status', 'balance', 'credit_limit', 'reserved', 'max_calls',
                        'lease_due'}

-- Account fields every before/after snapshot carries.
local SNAP = {'balance', 'reserved', 'status', 'status_reason'}

local function snapshot(acct)
  local v = redis.call('HMGET', acct, unpack(SNAP))
  return {balance = v[1], reserved = v[2], status = v[3], status_reason = v[4]}
end

-- A before/after snapshot as one stream field: "balance,reserved,status,status_reason".
local function snap_text(t)
  return (t.balance or '') .. ',' .. (t.reserved or '') .. ',' .. (t.status or '') .. ','
         .. (t.status_reason or '')
end

-- Append one audit entry: who/what/why/when, before/after snapshots, extra details
-- (fields x.NAME). Few fields keep XADD cheap and let the stream share field names.
local function audit(stream, maxlen, now, who, what, why, before, after, extra)
  local args = {stream}
  if tonumber(maxlen) > 0 then
    args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = maxlen
  end
  local fields = {'*', 'ts', s(now), 'who', who, 'what', what, 'why', why,
                  'b', snap_text(before), 'a', snap_text(after)}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  for i = 1, #extra, 2 do
    args[#args + 1] = 'x.' .. extra[i]; args[#args + 1] = extra[i + 1]
  end
  redis.call('XADD', unpack(args))
end

-- audit() where the hot scripts (commit, release) have what it needs as text already:
-- `now_s` s(now), `b` and `a` snap_text's of the before and after snapshots, then the
-- extra details as name/value pairs, each name with its 'x.' prefix. The same XADD,
-- without the argument table, the snapshot tables or the names' concatenations.
local function audit_x(stream, maxlen, now_s, who, what, why, b, a, ...)
  if tonumber(maxlen) > 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'ts', now_s, 'who', who,
               'what', what, 'why', why, 'b', b, 'a', a, ...)
  else
    redis.call('XADD', stream, '*', 'ts', now_s, 'who', who, 'what', what, 'why', why,
               'b', b, 'a', a, ...)
  end
end

-- The account's journal (chargingd/ledger/journal.py): one entry per money movement,
-- appended by the script that moves it, after its HSET of the account: the balance
-- and the net of lifetime totals (top-ups - debits) after it. The stream is the acct
-- key's sibling in the same {a:ID} slot ('{a:ID}:acct' -> '{a:ID}:journal'), derived
-- here so that every caller's KEYS (the fused scripts of sessions/ too) stay as they are.
-- `after` (optional): {balance, topups, debits} as the caller's HSET just left them
-- (stored strings, or nil where absent), when it knows them: not read again.
local function journal(acct, now, kind, amount, ref, source, who, why, after)
  if amount == 0 and kind ~= 'open' then return end
  local t = after or redis.call('HMGET', acct, 'balance', 'topups', 'debits')
  redis.call('XADD', string.sub(acct, 1, -5) .. 'journal', '*', 'k', kind, 'a', s(amount),
             'b', t[1], 'n', s(num(t[2]) - num(t[3])), 'r', ref, 's', source, 'w', who,
             'y', why, 't', s(now))
end

-- journal() of a debit where the caller (commit, release) has its figures: `now_s`
-- s(now), `balance_s` the balance its HSET just wrote, `net` topups - debits after it
-- (a number). The same entry, without reading the totals back from their text.
local function journal_x(acct, now_s, kind, amount, ref, source, who, why, balance_s, net)
  if amount == 0 and kind ~= 'open' then return end
  redis.call('XADD', string.sub(acct, 1, -5) .. 'journal', '*', 'k', kind, 'a', s(amount),
             'b', balance_s, 'n', s(net), 'r', ref, 's', source, 'w', who, 'y', why,
             't', now_s)
end

-- The lowest balance an account may spend down to: 0 prepaid, -credit_limit postpaid.
local function credit_floor(mode, credit_limit)
  if mode == 'postpaid' then return -credit_limit end
  return 0
end

-- Postpaid credit rule: suspend ("credit") at balance <= -credit_limit; lift only a
-- credit suspension once the balance is above the floor again. Returns status, reason.
local function credit_rule(mode, status, reason, balance, credit_limit)
  local at_floor = mode == 'postpaid' and balance <= -credit_limit
  if status == 'active' and at_floor then return 'suspended', 'credit' end
  if status == 'suspended' and reason == 'credit' and not at_floor then return 'active', '' end
  return status, reason
end

-- Reclaim the holds of `expired` (session ids whose lease is over) of one account.
-- Returns the new reserved total.
local function reclaim_ids(acct, holds, leases, stream, maxlen, now, who, expired, reserved)
  for i = 1, #expired do
    local sid = expired[i]
    local hold = num(redis.call('HGET', holds, sid))
    local before = snapshot(acct)
    reserved = reserved - hold
    redis.call('HDEL', holds, sid)
    redis.call('ZREM', leases, sid)
    redis.call('HSET', acct, 'reserved', s(reserved), 'updated_ms', s(now))
    local after = {balance = before.balance, reserved = s(reserved),
                   status = before.status, status_reason = before.status_reason}
    audit(stream, maxlen, now, who, 'reclaim', 'lease expired', before, after,
          {'session', sid, 'amount', s(hold)})
  end
  return reserved
end

-- Reclaim up to `limit` expired holds (lease expiry <= now) of one account.
-- Returns how many were reclaimed and the new reserved total.
local function reclaim(acct, holds, leases, stream, maxlen, now, who, limit, reserved)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)
  return #expired, reclaim_ids(acct, holds, leases, stream, maxlen, now, who, expired, reserved)
end

-- The account's 'lease_due' field (ms): no lease of the account expires before it, so
-- reserve.lua looks for expired leases only once it is due (absent: unknown, e.g. an
-- account written before the field existed: looked for now). NO_LEASE: no lease at
-- all. It only ever errs early: reserve.lua (the only script that adds leases) lowers
-- it to each lease it adds, and removing or renewing a lease leaves it below the rest.
local NO_LEASE = 4503599627370496  -- 2^52 ms

-- reclaim(), in one ZRANGE of the lowest `limit` + 1 leases that also tells the lowest
-- expiry left (NO_LEASE: none; <= now when more than `limit` were expired).
-- Returns how many were reclaimed, the new reserved total, the new lease_due.
local function reclaim_due(acct, holds, leases, stream, maxlen, now, who, limit, reserved)
  local low = redis.call('ZRANGE', leases, 0, limit, 'WITHSCORES')
  local expired, due = {}, NO_LEASE
  for i = 1, #low, 2 do
    local at = tonumber(low[i + 1])
    if at > now or #expired >= limit then
      due = at
      break
    end
    expired[#expired + 1] = low[i]
  end
  reserved = reclaim_ids(acct, holds, leases, stream, maxlen, now, who, expired, reserved)
  return #expired, reserved, due
end

-- reserve.lua's steps (refuse, decide, hold), made by its first run and kept here: in a
-- Functions library once (a library keeps its top-level values between calls; these
-- are functions of their arguments, never changed once made), by EVALSHA once per run
-- that reserves. Not its local functions (closures made on every reserve, with 17
-- upvalues between them), nor functions of this prelude (made on every EVALSHA run of
-- every script that has it: +3.5k instructions per authorize by EVALSHA).
local RESERVE_STEPS = nil
