-- The fraud rules' Lua: fraud_check (authorize), fraud_admit (a call granted) and
-- fraud_event (a CDR or a refusal), as functions. Not a script by itself: check.lua and
-- event.lua call them, and the sessions' fused authorize script can too (one round trip).
-- The ledger's status.lua is embedded ahead of this file as ledger_status(KEYS, ARGV)
-- (chargingd/ledger/steps.py): a block changes the account's status in the script that
-- decided it, through the ledger's own script and with the arguments the ledger built.
--
-- KEYS (all three functions): [1] fraud state hash {a:ACC}:fr:st (since, deny:RULE,
--   blocked_by)  [2] ledger acct  [3] ledger audit  (the block step's keys)
--   [4..] the keys of the ops
-- ARGV: [1] now ms  [2] identity ('' none)  [3] number of ops  [4] member of the event
--   (fraud_event: the CDR or refusal id, for deduplication; '' none)
--   [5] the ops, one JSON array of arrays (one argument decoded once by cjson: what a
--   call sends and parses is what authorize pays for), each op's 10 fields: kind, key
--   index, slot, window ms, limit, act, rule name ('' when it neither refuses nor
--   blocks), key ttl ms (0: an earlier op set it), extra (kind 'r': the least number
--   of calls the ratio needs; event ops: the refusal's cooldown ms, 0 = the window),
--   member (a string)
--   [6..12] when an op may block, the 7 ARGV of the ledger's status step
-- Op kinds: 'c' count (member: a call id), 'd' distinct members (a number), 'l' live
--   calls (member: the session id; window: how long an entry lives), 'n' a country
--   the account called before (member: the country; window: how long it is known),
--   'x' drop a live call, 's' spend (member: micros; a corrected CDR: the change, may
--   be negative), 'r' answered ratio (member 1|0; 'R' a corrected CDR's change, -1|1),
--   'u' deduplicate the event (member: ARGV[4]; window: how long ids are kept)
-- Counted entries live in zsets with score slot * 1e13 + ms, so one key holds the
--   counters of several rules (slots) of an account. Spend and answer ratios are
--   summed over 60 buckets per window in the hash {a:ACC}:fr:ev.
-- Act: 'a' alert, 'r' refuse, 'b' block, 's' shadow (reported, never acted on),
--   'x' learn only (never fires)
-- Returns {verdict, deciding op (0 none), blocked now 0|1, {op, count, ...} fired,
--          deny rule}  verdict: 'ok' | 'refuse' | 'block' | 'deny' | 'dup'
--          (fraud_seen: 'known' | 'again', its 5th value 'refuse|RULE' or 'block|RULE')

local SLOT = 1e13
local RANK = {s = 0, x = 0, a = 1, r = 2, b = 3}

local fr_parsed = nil  -- the ops, decoded once per script run

-- kind, key index, slot, window, limit, member, act, name, ttl, extra of op i
local function fr_op(ARGV, i)
  if not fr_parsed then fr_parsed = cjson.decode(ARGV[5]) end
  local o = fr_parsed[i]
  return o[1], o[2], o[3], o[4], o[5], o[10], o[6], o[7], o[8], o[9]
end

-- State: since (counts before it are ignored: an operator unblocked the account) and
-- the deny flags of event rules that refuse (deny:RULE or deny:RULE|IDENTITY -> until).
local function fr_state(key, now, identity)
  local st = redis.call('HGETALL', key)
  local since, deny = 0, nil
  for i = 1, #st, 2 do
    local f = st[i]
    if f == 'since' then
      since = tonumber(st[i + 1])
    elseif string.sub(f, 1, 5) == 'deny:' and tonumber(st[i + 1]) > now then
      local rule, who = string.match(f, '^deny:([^|]*)|?(.*)$')
      if who == '' or who == identity then deny = rule end
    end
  end
  return since, deny
end

-- A counted zset op: add, count; keep at most limit + 1 entries. While all the slot
-- holds (old entries too) is within the limit, so is the window: nothing to trim.
-- Past it: trim to the window (and since), count again.
local function fr_count(key, now, since, slot, win, limit, member)
  local off = slot * SLOT
  redis.call('ZADD', key, off + now, slot .. '|' .. member)
  local n = redis.call('ZCOUNT', key, off, off + SLOT - 1)
  if n <= limit then return n end
  local lo = now - win
  if since > lo then lo = since end
  redis.call('ZREMRANGEBYSCORE', key, off, string.format('(%d', off + lo))
  n = redis.call('ZCOUNT', key, off, off + SLOT - 1)
  if n > limit + 1 then
    local old = redis.call('ZRANGEBYSCORE', key, off, off + SLOT - 1, 'LIMIT', 0, n - limit - 1)
    redis.call('ZREM', key, unpack(old))
    n = limit + 1
  end
  return n
end

-- Live calls: entries whose expiry (score) is still ahead. Expired ones (a call whose
-- CDR never came) are trimmed by fraud_event ('x'), off the authorize path.
local function fr_live(key, now, member)
  local n = redis.call('ZCOUNT', key, string.format('(%d', now), '+inf')
  if not redis.call('ZSCORE', key, member) then n = n + 1 end
  return n
end

-- 60 buckets per window: add to this one, sum the window's (since applies by bucket).
local function fr_buckets(key, now, since, slot, win, field, amount)
  local width = math.max(1, math.floor(win / 60))
  local b = math.floor(now / width)
  local tag = slot .. ':' .. field .. ':'
  if amount ~= 0 then redis.call('HINCRBY', key, tag .. b, amount) end
  local first = b - 59
  local from_since = math.floor(since / width) + 1
  if since > 0 and from_since > first then first = from_since end
  local names = {}
  for k = first, b do names[#names + 1] = tag .. k end
  local sum = 0
  for _, v in ipairs(redis.call('HMGET', key, unpack(names))) do sum = sum + (tonumber(v) or 0) end
  redis.call('HDEL', key, tag .. (b - 60), tag .. (b - 61))
  return sum
end

local function fr_expire(key, ttl)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end

-- Acting on the worst fired op: block through the ledger's status script.
local function fr_block(KEYS, ARGV, n, now, name, text)
  local base = 6
  local args = {}
  for k = 0, 6 do args[k + 1] = ARGV[base + k] end
  args[4] = text
  local res = ledger_status({KEYS[2], KEYS[3]}, args)
  if res[1] == 'ok' then
    redis.call('HSET', KEYS[1], 'blocked_by', name, 'blocked_ms', string.format('%d', now))
    return 1
  end
  return 0
end

local function fr_verdict(KEYS, ARGV, n, now, fired, worst, worst_i, counts)
  if worst < 2 then return {'ok', worst_i, 0, fired, ''} end
  if worst == 2 then return {'refuse', worst_i, 0, fired, ''} end
  local _, _, _, win, limit, _, _, name = fr_op(ARGV, worst_i)
  local text = 'fraud rule ' .. name .. ': ' .. counts[worst_i] .. ' (limit ' .. limit
               .. ', window ' .. math.floor(win / 1000) .. ' s)'
  return {'block', worst_i, fr_block(KEYS, ARGV, n, now, name, text), fired, ''}
end

-- What fraud_check read of each 'n' op (the country's last call, ms), for fraud_admit.
local fr_last = {}
local DAY_MS = 86400000

local function fraud_check(KEYS, ARGV)
  local now, identity, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
  local since, deny = fr_state(KEYS[1], now, identity)
  if deny then return {'deny', 0, 0, {}, deny} end
  local fired, counts, worst, worst_i = {}, {}, -1, 0
  for i = 1, n do
    local kind, k, slot, win, limit, member, act, _, ttl = fr_op(ARGV, i)
    local key, hit, count = KEYS[k], false, 0
    if kind == 'c' or kind == 'd' then
      count = fr_count(key, now, since, slot, win, limit, member)
      hit = count > limit
    elseif kind == 'l' then
      count = fr_live(key, now, member)
      hit = count > limit
    elseif kind == 'n' then
      local last = tonumber(redis.call('HGET', key, member) or '0')
      fr_last[i] = last
      if last < now - win then  -- a country not called within the memory: any history?
        count = redis.call('HLEN', key)
        hit = count > 0
      end
    end
    -- (live calls and countries: their keys are written, and expire, in fraud_admit)
    if kind ~= 'l' and kind ~= 'n' then fr_expire(key, ttl) end
    if hit and act ~= 'x' then
      fired[#fired + 1] = i
      fired[#fired + 1] = count
      counts[i] = count
      if RANK[act] > worst then worst, worst_i = RANK[act], i end
    end
  end
  return fr_verdict(KEYS, ARGV, n, now, fired, worst, worst_i, counts)
end

-- The call was granted: it is live ('l' in kinds), and its country is known from now
-- on ('n'). The fused authorize runs both after its reserve, in its own run; the
-- step-by-step path admits the live call with fraud_check (check.lua: concurrent calls
-- on several daemons see each other; forgotten if the reserve refuses) and learns the
-- country only after a successful reserve (admit.lua).
local function fraud_admit(KEYS, ARGV, kinds)
  local now, n = tonumber(ARGV[1]), tonumber(ARGV[3])
  local live, country = string.find(kinds, 'l', 1, true), string.find(kinds, 'n', 1, true)
  for i = 1, n do
    local kind, k, _, win, _, member, _, _, ttl = fr_op(ARGV, i)
    if kind == 'l' and live then
      redis.call('ZADD', KEYS[k], now + win, member)
      fr_expire(KEYS[k], ttl)
    elseif kind == 'n' and country then
      local last = fr_last[i] or tonumber(redis.call('HGET', KEYS[k], member) or '0')
      if last < now - math.min(DAY_MS, win / 100) then
        -- the last call to a country, rewritten at most once a day (1 % of the memory):
        -- the key must outlive the last write by the memory, no more
        redis.call('HSET', KEYS[k], member, string.format('%d', now))
        fr_expire(KEYS[k], ttl)
      end
    end
  end
end

-- A retransmitted authorize (same session id, on any daemon) is answered as the first
-- one was, and counted once. The authorize scripts (check.lua, the sessions' fused
-- script) append to the KEYS above: [#-2] {a:ACC}:fr:no:SID (this call's refusal by a
-- rule, remembered), then the ledger's known step (leases, session hash); and to the
-- ARGV: [#-1] the session id, [#] how long a refusal is remembered (ms).
-- fraud_seen: nil for a new call; {'known', ...} when the ledger answered it already
-- (its reserve answers the same again: a live call's grant, a remembered refusal);
-- {'again', 0, 0, {}, 'refuse|RULE' or 'block|RULE'} when a rule refused it.
local function fraud_seen(KEYS, ARGV)
  local nk, na = #KEYS, #ARGV
  local again = redis.call('GET', KEYS[nk - 2])
  if again then return {'again', 0, 0, {}, again} end
  if ledger_known({KEYS[nk - 1], KEYS[nk]}, {ARGV[na - 1]}) == 1 then
    return {'known', 0, 0, {}, ''}
  end
  return nil
end

-- fraud_check refused the call: remember which rule, for its retransmissions.
local function fraud_remember(KEYS, ARGV, verdict)
  local name = verdict[5]
  if verdict[1] ~= 'deny' then name = select(8, fr_op(ARGV, verdict[2])) end
  local how = 'refuse'
  if verdict[1] == 'block' then how = 'block' end
  redis.call('SET', KEYS[#KEYS - 2], how .. '|' .. name, 'PX', ARGV[#ARGV])
end

local function fraud_event(KEYS, ARGV)
  local now, n, id = tonumber(ARGV[1]), tonumber(ARGV[3]), ARGV[4]
  local since = fr_state(KEYS[1], now, '')
  local fired, counts, worst, worst_i = {}, {}, -1, 0
  for i = 1, n do
    local kind, k, slot, win, limit, member, act, _, ttl, extra = fr_op(ARGV, i)
    local key, hit, count = KEYS[k], false, 0
    if kind == 'x' then
      redis.call('ZREM', key, member)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)  -- live entries that expired
    elseif kind == 'u' then  -- an event seen before (a re-delivered CDR) counts once
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
      if redis.call('ZADD', key, 'NX', now, id) == 0 then return {'dup', 0, 0, {}, ''} end
    elseif kind == 'c' then
      count = fr_count(key, now, since, slot, win, limit, member)
      hit = count > limit
    elseif kind == 's' then
      count = fr_buckets(key, now, since, slot, win, 'm', tonumber(member))
      hit = count > limit
    elseif kind == 'r' or kind == 'R' then
      -- 'R': a corrected CDR (revision > 0): its call was seized already; member is the
      -- change of its answered flag (-1|1)
      local seized = fr_buckets(key, now, since, slot, win, 'a', kind == 'r' and 1 or 0)
      local answered = fr_buckets(key, now, since, slot, win, 'n', tonumber(member))
      -- limit: the lowest ratio in percent, once the window holds extra calls
      count = math.floor(answered * 100 / seized)
      hit = seized >= extra and answered * 100 < limit * seized
    end
    fr_expire(key, ttl)
    if hit and act ~= 'x' then
      fired[#fired + 1] = i
      fired[#fired + 1] = count
      counts[i] = count
      if RANK[act] > worst then worst, worst_i = RANK[act], i end
    end
  end
  if worst == 2 then  -- refusing from an event: deny the next calls for the cooldown
    local _, _, _, win, _, _, _, name, _, cooldown = fr_op(ARGV, worst_i)
    if cooldown <= 0 then cooldown = win end
    local field = 'deny:' .. name
    if ARGV[2] ~= '' then field = field .. '|' .. ARGV[2] end  -- only that identity
    redis.call('HSET', KEYS[1], field, string.format('%d', now + cooldown))
    return {'refuse', worst_i, 0, fired, name}
  end
  return fr_verdict(KEYS, ARGV, n, now, fired, worst, worst_i, counts)
end
