-- The fraud rules' Lua: fraud_seen / fraud_check / fraud_remember / fraud_admit /
-- fraud_save (authorize), fraud_note (a call forgotten, a refusal remembered),
-- fraud_unblock and fraud_event (a CDR or a refusal), as functions. Not a script by
-- itself: check.lua, check_ip.lua, admit.lua, note.lua, unblock.lua and event.lua call
-- them, and the sessions' fused authorize script does too (one round trip). The
-- ledger's status.lua is embedded ahead of this file as ledger_status(KEYS, ARGV)
-- (chargingd/ledger/steps.py): a block changes the account's status in the script that
-- decided it, through the ledger's own script and with the arguments the ledger built.
--
-- The state of an account is ONE value, {a:ACC}:fr:v (a caller IP's {fip:IP}:fr:v), a
-- cmsgpack map read once (GET) and written once (SET PX) per authorize:
--   s since (counts before it are ignored: an operator unblocked the account; the
--     authorize counts are cleared then, the event counts compare with it)
--   b blocked_by, bm blocked_ms, ub unblocked_by
--   d deny flags of event rules that refuse: 'RULE' or 'RULE|IDENTITY' -> until ms
--   w counters: id -> {width ms, bucket, count, offset of its last call, ...} (id: the
--     rule's slot, slot|identity, slot|range); a window is NB buckets of width
--     ceil(win / NB): the count is the sum of the buckets that hold a call within the
--     window (never fewer than the calls in it; the bucket the window's start cuts
--     through counts whole, so a rule can fire up to one bucket early)
--   n distinct numbers: 'slot|number' -> ms last called (at most limit + 1 kept)
--   l live calls: session id -> ms its entry lapses (at most limit + 1 kept)
--   c countries called: country -> ms of the last call there
--   r recent answers for retransmissions: session id -> {'refuse|RULE' |
--     'block|RULE' | 'known', until ms} (at most R_MAX kept)
--   q the last Q_MAX session ids counted (the step-by-step path: a repeat of a call in
--     flight between its check and its reserve)
--   x ms the value lives until (a write never shortens it)
--
-- Authorize KEYS: [1] account value  [2] ledger acct  [3] ledger audit (the block step's
--   keys)  [4] the call's session record {a:ACC}:r:SID (a call the ledger granted)
--   [5] the caller IP's value (or [1] again)
-- Authorize ARGV: [1] now ms  [2] identity ('' none)  [3] session id  [4] the ops, one
--   JSON array (fixed per rule set and shape of call: compiled.py) of arrays of 9:
--   kind, key index (1 or 5), slot, window ms, limit, act, rule name ('' when it
--   neither refuses nor blocks), value ttl ms, extra (range digits)
--   [5] called number  [6] its country  [7] how long a refusal is remembered (ms)
--   [8..14] when an op may block, the 7 ARGV of the ledger's status step
-- Op kinds: 'c' count per slot, 'i' count per slot and identity, 'g' count per slot and
--   range (the number less its last `extra` digits), 'd' distinct numbers, 'l' live
--   calls (window: how long an entry lives), 'n' a country called before (window: the
--   memory)
-- Act: 'a' alert, 'r' refuse, 'b' block, 's' shadow (reported, never acted on),
--   'x' learn only (never fires)
-- Returns {verdict, deciding op (0 none), blocked now 0|1, {op, count, ...} fired,
--          deny rule}  verdict: 'ok' | 'refuse' | 'block' | 'deny' | 'dup'
--          (fraud_seen: 'known' | 'again', its 5th value 'refuse|RULE' or 'block|RULE')

local RANK = {s = 0, x = 0, a = 1, r = 2, b = 3}
local NB = 10      -- buckets per window
local R_MAX = 16   -- remembered answers per account
local Q_MAX = 4    -- session ids counted last (step-by-step path)
local DAY_MS = 86400000

local fr_parsed = nil  -- the ops, decoded once per script run

local function fr_ops(ARGV)
  if not fr_parsed then fr_parsed = cjson.decode(ARGV[4]) end
  return fr_parsed
end

-- The values a run read, by key name (an account's and a caller IP's): loaded once,
-- written once (fraud_save) when changed.
local fr_vals = {}

local function fr_load(key)
  local v = fr_vals[key]
  if v then return v end
  local raw = redis.call('GET', key)
  if raw then v = cmsgpack.unpack(raw) else v = {} end
  v.w = v.w or {}
  fr_vals[key] = v
  v._dirty = false
  return v
end

local function fr_save(now, ttl)
  for key, v in pairs(fr_vals) do
    if v._dirty then
      v._dirty = nil
      local until_ms = math.max(v.x or 0, now + ttl)
      v.x = until_ms
      redis.call('SET', key, cmsgpack.pack(v), 'PX', until_ms - now)
      v._dirty = false
    end
  end
end

local function fr_size(t)
  local n = 0
  if t then for _ in pairs(t) do n = n + 1 end end
  return n
end

-- A bucketed counter: add one call at now, sum the window. Each bucket keeps the
-- offset of its last call: a bucket whose calls all left the window no longer counts
-- (only a bucket the window's start cuts through may count calls already out of it).
local function fr_bucket(v, id, now, win, add)
  local width = math.ceil(win / NB)
  local cur = math.floor(now / width)
  local from = now - win  -- a call before this is out of the window
  local lo = math.floor(from / width)
  local old = v.w[id]
  local out, sum = {width}, 0
  if old then
    for k = 2, #old, 3 do
      local b = old[k]
      if b > lo or (b == lo and b * width + old[k + 2] >= from) then
        out[#out + 1] = b
        out[#out + 1] = old[k + 1]
        out[#out + 1] = old[k + 2]
        sum = sum + old[k + 1]
      end
    end
  end
  local n = #out
  if n > 1 and out[n - 2] == cur then
    out[n - 1] = out[n - 1] + add
    out[n] = now - cur * width
  else
    out[n + 1] = cur
    out[n + 2] = add
    out[n + 3] = now - cur * width
  end
  v.w[id] = out
  return sum + add
end

-- Counters of other ids (another identity, range) whose last call left their window.
local function fr_prune(v, now)
  for id, c in pairs(v.w) do
    local width, last = c[1], c[#c - 2]
    if not last or last < math.floor(now / width) - NB - 1 then v.w[id] = nil end
  end
end

-- Distinct numbers of a slot within the window, this one called now; at most limit + 1
-- kept (the oldest dropped).
local function fr_distinct(v, now, slot, win, limit, number)
  local n = v.n or {}
  v.n = n
  n[slot .. '|' .. number] = now
  local prefix = slot .. '|'
  local count, kept, oldest, oldest_ms = 0, 0, nil, nil
  for k, ms in pairs(n) do
    if string.sub(k, 1, #prefix) == prefix then
      if ms < now - win then
        n[k] = nil
      else
        count = count + 1
        if not oldest_ms or ms < oldest_ms then oldest, oldest_ms = k, ms end
      end
    end
  end
  if count > limit + 1 then n[oldest] = nil end
  return count
end

-- Live calls: entries whose lapse is still ahead, this one counted once.
local function fr_live(v, now, sid)
  local n = 0
  local l = v.l
  if l then
    for s, lapse in pairs(l) do
      if lapse > now and s ~= sid then n = n + 1 end
    end
  end
  return n + 1
end

-- Deny flags of event rules that refuse (this identity's, or the account's).
local function fr_deny(v, now, identity)
  if not v.d then return nil end
  for f, until_ms in pairs(v.d) do
    if until_ms > now then
      local rule, who = string.match(f, '^([^|]*)|?(.*)$')
      if who == '' or who == identity then return rule end
    end
  end
  return nil
end

-- Acting on the worst fired op: block through the ledger's status script.
local function fr_block(KEYS, ARGV, now, name, text)
  local base = 8
  if not ARGV[base] then return 0 end  -- no block step (a caller IP's own script)
  local args = {}
  for k = 0, 6 do args[k + 1] = ARGV[base + k] end
  args[4] = text
  local res = ledger_status({KEYS[2], KEYS[3]}, args)
  if res[1] == 'ok' then
    local v = fr_load(KEYS[1])
    v.b, v.bm, v._dirty = name, now, true
    return 1
  end
  return 0
end

local function fr_verdict(KEYS, ARGV, now, fired, worst, worst_i, counts, win, limit, name)
  if worst < 2 then return {'ok', worst_i, 0, fired, ''} end
  if worst == 2 then return {'refuse', worst_i, 0, fired, ''} end
  local text = 'fraud rule ' .. name .. ': ' .. counts[worst_i] .. ' (limit ' .. limit
               .. ', window ' .. math.floor(win / 1000) .. ' s)'
  return {'block', worst_i, fr_block(KEYS, ARGV, now, name, text), fired, ''}
end

local function fr_add_recent(v, now, sid, what, ttl)
  local r = v.r or {}
  v.r = r
  local count, first, first_ms = 0, nil, nil
  for s, e in pairs(r) do
    if e[2] <= now then
      r[s] = nil
    else
      count = count + 1
      if not first_ms or e[2] < first_ms then first, first_ms = s, e[2] end
    end
  end
  if count >= R_MAX and not r[sid] then r[first] = nil end
  r[sid] = {what, now + ttl}
  v._dirty = true
end

-- A retransmitted authorize (same session id, on any daemon) is answered as the first
-- one was, and counted once: nil for a new call; {'known', ...} when the ledger
-- answered it already (its record exists, it is live, the ledger refused it: its
-- reserve answers the same again); {'again', 0, 0, {}, 'refuse|RULE' or 'block|RULE'}
-- when a rule refused it.
local function fraud_seen(KEYS, ARGV)
  if redis.call('EXISTS', KEYS[4]) == 1 then return {'known', 0, 0, {}, ''} end
  local now, sid = tonumber(ARGV[1]), ARGV[3]
  local v = fr_load(KEYS[1])
  local e = v.r and v.r[sid]
  if e and e[2] > now then
    if e[1] == 'known' then return {'known', 0, 0, {}, ''} end
    return {'again', 0, 0, {}, e[1]}
  end
  if v.l and v.l[sid] then return {'known', 0, 0, {}, ''} end
  if v.q then
    for _, s in ipairs(v.q) do
      if s == sid then return {'known', 0, 0, {}, ''} end
    end
  end
  return nil
end

-- The account's and caller IP's ttl of this call's ops (the longest each needs).
local fr_ttl = {}

local function fraud_check(KEYS, ARGV)
  local now, identity, sid = tonumber(ARGV[1]), ARGV[2], ARGV[3]
  local acc = fr_load(KEYS[1])
  local deny = fr_deny(acc, now, identity)
  if deny then return {'deny', 0, 0, {}, deny} end
  local ops = fr_ops(ARGV)
  local fired, counts, worst, worst_i = {}, {}, -1, 0
  local wwin, wlimit, wname = 0, 0, ''
  for i = 1, #ops do
    local o = ops[i]
    local kind, k, slot, win, limit, act = o[1], o[2], o[3], o[4], o[5], o[6]
    local v = fr_load(KEYS[k])
    if (fr_ttl[k] or 0) < o[8] then fr_ttl[k] = o[8] end
    local hit, count = false, 0
    if kind == 'c' then
      count = fr_bucket(v, tostring(slot), now, win, 1)
    elseif kind == 'i' then
      count = fr_bucket(v, slot .. '|' .. identity, now, win, 1)
    elseif kind == 'g' then
      local range = string.sub(ARGV[5], 1, math.max(2, #ARGV[5] - o[9]))  -- destinations.py
      count = fr_bucket(v, slot .. '|' .. range, now, win, 1)
    elseif kind == 'd' then
      count = fr_distinct(v, now, slot, win, limit, ARGV[5])
    elseif kind == 'l' then
      count = fr_live(v, now, sid)
    elseif kind == 'n' then
      local last = (acc.c and acc.c[ARGV[6]]) or 0
      if last < now - win then  -- a country not called within the memory: any history?
        count = fr_size(acc.c)
      end
      limit = 0
    end
    if kind ~= 'l' and kind ~= 'n' then v._dirty = true end
    hit = count > limit
    if hit and act ~= 'x' then
      fired[#fired + 1] = i
      fired[#fired + 1] = count
      counts[i] = count
      if RANK[act] > worst then
        worst, worst_i = RANK[act], i
        wwin, wlimit, wname = win, o[5], o[7]
      end
    end
  end
  return fr_verdict(KEYS, ARGV, now, fired, worst, worst_i, counts, wwin, wlimit, wname)
end

-- The call was granted: it is live ('l' in kinds; at most limit + 1 entries kept, the
-- soonest to lapse dropped), and its country is known from now on ('n', rewritten at
-- most once a day: 1 % of the memory when shorter). The fused authorize runs both
-- after its reserve, in its own run; the step-by-step path admits the live call with
-- fraud_check (check.lua) and learns the country after a successful reserve (admit.lua).
local function fraud_admit(KEYS, ARGV, kinds)
  local now, sid = tonumber(ARGV[1]), ARGV[3]
  local live, country = string.find(kinds, 'l', 1, true), string.find(kinds, 'n', 1, true)
  local v = fr_load(KEYS[1])
  local ops = fr_ops(ARGV)
  for i = 1, #ops do
    local o = ops[i]
    local kind, win = o[1], o[4]
    if (fr_ttl[o[2]] or 0) < o[8] then fr_ttl[o[2]] = o[8] end
    if kind == 'l' and live then
      local l = v.l or {}
      v.l = l
      l[sid] = now + win
      local n, first, first_ms = 0, nil, nil
      for s, lapse in pairs(l) do
        if lapse <= now then
          l[s] = nil
        else
          n = n + 1
          if not first_ms or lapse < first_ms then first, first_ms = s, lapse end
        end
      end
      if n > o[5] + 1 then l[first] = nil end
      v._dirty = true
    elseif kind == 'n' and country then
      local c = v.c or {}
      v.c = c
      local cc = ARGV[6]
      if (c[cc] or 0) < now - math.min(DAY_MS, win / 100) then
        c[cc] = now
        v._dirty = true
      end
    end
  end
end

-- fraud_check refused the call: remember which rule, for its retransmissions.
local function fraud_remember(KEYS, ARGV, verdict)
  local name = verdict[5]
  if verdict[1] ~= 'deny' then name = fr_ops(ARGV)[verdict[2]][7] end
  local how = 'refuse'
  if verdict[1] == 'block' then how = 'block' end
  fr_add_recent(fr_load(KEYS[1]), tonumber(ARGV[1]), ARGV[3], how .. '|' .. name, tonumber(ARGV[7]))
end

-- The ledger answered a call the rules counted by refusing it (no credit): its
-- retransmissions go to the ledger again, not to the rules.
local function fraud_known(KEYS, ARGV)
  fr_add_recent(fr_load(KEYS[1]), tonumber(ARGV[1]), ARGV[3], 'known', tonumber(ARGV[7]))
end

-- The step-by-step path counted this call (check.lua): a repeat while it is between
-- its check and its reserve is the same call.
local function fraud_counted(KEYS, ARGV)
  local v = fr_load(KEYS[1])
  local q = v.q or {}
  table.insert(q, 1, ARGV[3])
  if #q > Q_MAX then table.remove(q) end
  v.q = q
  v._dirty = true
end

-- Write the values this run changed, each living as long as its longest op needs.
local function fraud_save(KEYS, ARGV)
  local now = tonumber(ARGV[1])
  for k, ttl in pairs(fr_ttl) do
    local v = fr_vals[KEYS[k]]
    if v and v._dirty then
      fr_prune(v, now)
      local until_ms = math.max(v.x or 0, now + ttl)
      v.x = until_ms
      v._dirty = nil
      redis.call('SET', KEYS[k], cmsgpack.pack(v), 'PX', until_ms - now)
      v._dirty = false
    end
  end
  fr_save(now, tonumber(ARGV[7]))  -- a value no op named (a refusal remembered)
end

-- note.lua: KEYS[1] the account's value  ARGV[1] now  [2] session id  [3] what:
-- 'forget' (a call the rules admitted was not granted after all: not live, and its
-- repeats go to the ledger) | 'refuse|RULE' | 'block|RULE' (a refusal to remember)
-- [4] how long a refusal is remembered (ms)  [5] the value's ttl (ms)
local function fraud_note(KEYS, ARGV)
  local now, sid, what = tonumber(ARGV[1]), ARGV[2], ARGV[3]
  local v = fr_load(KEYS[1])
  if what == 'forget' then
    if v.l then v.l[sid] = nil end
    what = 'known'
  end
  fr_add_recent(v, now, sid, what, tonumber(ARGV[4]))
  fr_save(now, tonumber(ARGV[5]))
end

-- unblock.lua: the counts start over (since = now), deny flags and the block cleared;
-- live calls, countries and remembered answers kept. KEYS[1] the value  ARGV[1] now
-- [2] who  [3] the value's ttl (ms)
local function fraud_unblock(KEYS, ARGV)
  local now = tonumber(ARGV[1])
  local v = fr_load(KEYS[1])
  v.s, v.ub, v.w, v.n, v.d, v.b, v.bm, v.q = now, ARGV[2], {}, nil, nil, nil, nil, nil
  v._dirty = true
  fr_save(now, tonumber(ARGV[3]))
end

-- Event ops (fraud_event): KEYS [1] the value  [2..3] the block step  [4..] the ops' keys
-- ARGV [1] now  [2] identity  [3] the event id (deduplication)  [4] the ops, one JSON
--   array of arrays of 10: kind, key index, slot, window ms, limit, act, rule name, key
--   ttl ms (0: an earlier op set it), extra (kind 'r': the least number of calls the
--   ratio needs; else the refusal's cooldown ms, 0 = the window), member
--   [7] the value's ttl (ms)  [8..14] the block step's ARGV
-- Kinds: 'x' a live call ended (member: the session id), 'u' deduplicate the event
--   (window: how long ids are kept), 'c' count (a zset; member: a call id), 's' spend
--   (member: micros; a corrected CDR: the change), 'r' answered ratio (member 1|0; 'R'
--   a corrected CDR's change, -1|1). Counted calls live in zsets with score
--   slot * 1e13 + ms; spend and answer ratios are summed over 60 buckets per window in
--   the hash {a:ACC}:fr:ev.
local SLOT = 1e13

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

local function fraud_event(KEYS, ARGV)
  local now, id = tonumber(ARGV[1]), ARGV[3]
  local v = fr_load(KEYS[1])
  local since = v.s or 0
  local ops = fr_ops(ARGV)
  local fired, counts, worst, worst_i = {}, {}, -1, 0
  for i = 1, #ops do
    local o = ops[i]
    local kind, k, slot, win, limit, act, ttl, extra, member =
      o[1], o[2], o[3], o[4], o[5], o[6], o[8], o[9], o[10]
    local key, hit, count = KEYS[k], false, 0
    if kind == 'x' then
      if v.l then
        for s, lapse in pairs(v.l) do
          if s == member or lapse <= now then v.l[s] = nil; v._dirty = true end
        end
      end
      ttl = 0
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
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    if hit and act ~= 'x' then
      fired[#fired + 1] = i
      fired[#fired + 1] = count
      counts[i] = count
      if RANK[act] > worst then worst, worst_i = RANK[act], i end
    end
  end
  local verdict
  if worst == 2 then  -- refusing from an event: deny the next calls for the cooldown
    local o = ops[worst_i]
    local cooldown = o[9]
    if cooldown <= 0 then cooldown = o[4] end
    local field = o[7]
    if ARGV[2] ~= '' then field = field .. '|' .. ARGV[2] end  -- only that identity
    v.d = v.d or {}
    v.d[field] = now + cooldown
    v._dirty = true
    verdict = {'refuse', worst_i, 0, fired, o[7]}
  elseif worst_i > 0 then
    local o = ops[worst_i]
    verdict = fr_verdict(KEYS, ARGV, now, fired, worst, worst_i, counts, o[4], o[5], o[7])
  else
    verdict = {'ok', 0, 0, fired, ''}
  end
  fr_save(now, tonumber(ARGV[7]))
  return verdict
end
