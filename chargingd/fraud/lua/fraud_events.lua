-- The fraud rules' Lua off the authorize path, as functions (loaded after fraud.lua,
-- whose value helpers they use): fraud_note, fraud_unblock, fraud_lift, fraud_event.
-- Not a script by itself: note.lua, unblock.lua, lift.lua and event.lua call them.

-- note.lua: KEYS[1] the account's value  [2] the call's answer key  ARGV[1] now  [2] session id  [3] what:
-- 'forget' (a call the rules admitted was not granted after all: not live, and its
-- repeats go to the ledger) | 'refuse|RULE' | 'block|RULE' (a refusal to remember; the
-- call is not live either)
-- [4] how long a refusal is remembered (ms)  [5] the value's ttl (ms)
local function fraud_note(KEYS, ARGV)
  local now, sid, what = tonumber(ARGV[1]), ARGV[2], ARGV[3]
  local v = fr_load(KEYS[1])
  -- either way the call is not live: check.lua admitted it, then its reserve refused
  -- it, or a caller IP's rule did (Redis Cluster: in a script of their own, after)
  if v.l then v.l[sid] = nil end
  if what == 'forget' then what = 'known' end
  fr_add_recent(v, now, sid, what, tonumber(ARGV[4]), KEYS[2])
  fr_save(now, tonumber(ARGV[5]))
end

-- The counts of the events' buckets start over at `now` (an unblock, a lift of the
-- account): the buckets of the account's spend and answers ({a:ACC}:fr:ev) are dropped
-- and the hash notes when (field 'c'), so the bucket `now` falls in counts again from
-- its next event on (fr_buckets). Without the note (a value whose since an older version
-- set) that bucket is left out whole, as before: its events before since may be in it.
local function fr_ev_restart(key, now, ttl)
  if not key then return end
  redis.call('DEL', key)
  redis.call('HSET', key, 'c', now)
  redis.call('PEXPIRE', key, ttl)
end

-- unblock.lua: the counts start over (since = now), deny flags and the block cleared;
-- live calls, countries and remembered answers kept. KEYS[1] the value  [2] the
-- account's events hash (fr_ev_restart)  ARGV[1] now  [2] who  [3] the value's ttl (ms)
local function fraud_unblock(KEYS, ARGV)
  local now = tonumber(ARGV[1])
  local v = fr_load(KEYS[1])
  v.s, v.ub, v.w, v.g, v.h, v.n, v.d, v.b, v.bm, v.q =
    now, ARGV[2], {}, nil, nil, nil, nil, nil, nil, nil
  v._dirty = true
  fr_save(now, tonumber(ARGV[3]))
  fr_ev_restart(KEYS[2], now, tonumber(ARGV[3]))
end

-- lift.lua: an operator ends the refusals the rules hold against an active account
-- (not a block: fraud_unblock's), or against one identity of it. KEYS[1] the value
-- [2] the account  [3] its audit stream  [4] the account's event log ({a:ID}:fr:log)
-- [5] its events hash ({a:ID}:fr:ev, fr_ev_restart: a lift of the account)
-- ARGV[1] now  [2] who  [3] why  [4] the audit's max entries  [5] the value's ttl
-- [6] the identity ('' the whole account)
-- The account: its deny flags cleared and its counts started over as fraud_unblock
-- does (so a velocity or failed_attempts refusal ends too).
-- An identity: only what is that identity's: its deny flags ('RULE|IDENTITY'), its
-- counters per identity (v.h 'SLOT/WIN|IDENTITY') and its failed attempts in the
-- account's event log (members 'SLOT|f:LEN:IDENTITY|SID', fraud_event 'f'); the
-- account's own flags and counts (and other identities') are left as they are: only a
-- lift of the account ends them.
-- Audited in the ledger's trail (common.lua's audit). Returns {'ok', the deny flags
-- lifted that were in force (comma separated)} | {'unknown'} | {'blocked'} (blocked by
-- a rule: nothing changed)
local function fraud_lift(KEYS, ARGV)
  local now, identity = tonumber(ARGV[1]), ARGV[6] or ''
  local a = redis.call('HMGET', KEYS[2], 'status', 'status_reason')
  if not a[1] then return {'unknown'} end
  if a[1] == 'blocked' and a[2] == 'fraud' then return {'blocked'} end
  local v = fr_load(KEYS[1])
  local lifted = {}
  if identity == '' then
    for f, until_ms in pairs(v.d or {}) do
      if until_ms > now then lifted[#lifted + 1] = f end
    end
    v.s, v.w, v.g, v.h, v.n, v.d, v.q = now, {}, nil, nil, nil, nil, nil
    fr_ev_restart(KEYS[5], now, tonumber(ARGV[5]))
  else
    for f, until_ms in pairs(v.d or {}) do
      local _, who = string.match(f, '^([^|]*)|?(.*)$')
      if who == identity then
        if until_ms > now then lifted[#lifted + 1] = f end
        v.d[f] = nil
      end
    end
    if v.d and next(v.d) == nil then v.d = nil end
    for id in pairs(v.h or {}) do
      local p = string.find(id, '|', 1, true)
      if p and string.sub(id, p + 1) == identity then v.h[id] = nil end
    end
    local tag = 'f:' .. #identity .. ':' .. identity .. '|'
    local mine = {}
    for _, m in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
      local p = string.find(m, '|', 1, true)
      if p and string.sub(m, p + 1, p + #tag) == tag then mine[#mine + 1] = m end
    end
    if #mine > 0 then redis.call('ZREM', KEYS[4], unpack(mine)) end
  end
  table.sort(lifted)
  lifted = table.concat(lifted, ',')
  v._dirty = true
  fr_save(now, tonumber(ARGV[5]))
  local snap = snapshot(KEYS[2])
  local details = {'lifted', lifted}
  if identity ~= '' then details = {'identity', identity, 'lifted', lifted} end
  audit(KEYS[3], ARGV[4], now, ARGV[2], 'fraud_lift', ARGV[3], snap, snap, details)
  return {'ok', lifted}
end

-- Event ops (fraud_event): KEYS [1] the value  [2..3] the block step  [4..] the ops' keys
-- ARGV [1] now  [2] identity  [3] the event id (deduplication)  [4] the ops, one JSON
--   array of arrays of 10: kind, key index, slot, window ms, limit, act, rule name, key
--   ttl ms (0: an earlier op set it), extra (kind 'r': the least number of calls the
--   ratio needs; else the refusal's cooldown ms, 0 = the window), member
--   [5] the account's currency ('' unknown)  [6] its minor unit (decimals: a spend
--   block's why, fr_money)  [7] the value's ttl (ms)  [8..11] unused  [12..18] the
--   block step's ARGV
-- Kinds: 'x' a live call ended (member: its session id), 'u' deduplicate the event
--   (window: how long ids are kept), 'c' count (a zset; member: a call id), 'f' count
--   an Access-Reject as 'c' does, unless the op's rule refuses the event's identity now
--   (its deny flag: the reject is that refusal's own, no new failed attempt; member:
--   'f:LEN:IDENTITY|SID', plan.reject_member, for fraud_lift's identity), 's' spend
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

-- The events' hash ({a:ACC}:fr:ev), read once per run (HGETALL) and kept as the run
-- changes it: key -> tag ('SLOT:FIELD:') -> {bucket -> amount}. Its fields are tag ..
-- bucket (Lua's text of the number). One read of the fields there are, rather than an HMGET
-- of the 60 names a window may hold per rule and field (most of them absent):
-- docs/fraud-cost.md "Nineteenth round".
local fr_ev = {}

local function fr_ev_read(key)
  local all = fr_ev[key]
  if all then return all end
  all = {}
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local f = flat[i]
    local p = string.find(f, ':', 1, true)
    local k = p and tonumber(string.sub(f, p + 3))
    if f == 'c' then
      all[f] = tonumber(flat[i + 1])  -- when its counts started over (fr_ev_restart)
    elseif k then
      local tag = string.sub(f, 1, p + 2)
      local t = all[tag]
      if not t then t = {}; all[tag] = t end
      t[k] = tonumber(flat[i + 1]) or 0
    end
  end
  fr_ev[key] = all
  return all
end

-- One field of a window: add amount (text; '0' none) to bucket b, sum the buckets from
-- first to b (and bucket b - 60 when edge), and name in gone the buckets that left the
-- window (b - 61 and before; b - 60 too when not edge).
local function fr_bucket_sum(key, all, tag, b, first, amount, gone, edge)
  local t = all[tag]
  if not t then t = {}; all[tag] = t end
  if tonumber(amount) ~= 0 then t[b] = redis.call('HINCRBY', key, tag .. b, amount) end
  local sum, left = 0, b - 61
  if not edge then left = b - 60 end
  for k, n in pairs(t) do
    if k <= left then
      gone[#gone + 1] = tag .. k
      t[k] = nil
    elseif (k >= first and k <= b) or (edge and k == b - 60) then
      sum = sum + n
    end
  end
  return sum
end

-- 60 buckets per window: add each field's amount (text; '0' none) to this one, sum
-- each field over the window's (since applies by bucket): f1's sum, then f2's (f2 nil:
-- one field); the buckets that left the window deleted. The bucket the window's start
-- cuts through (b - 60) counts whole while its last event (field 't', ms) is within the
-- window, as the authorize counters' do (fr_bucket): never less than the window holds,
-- at most one bucket early. Left out, what an account spent in the window's first
-- minute (an hour's cap; 24 min of a day's) was counted nowhere: 49 + 2 spent 59.5 min
-- apart passed a cap of 50 unseen.
local function fr_buckets(key, now, since, slot, win, f1, a1, f2, a2)
  local width = math.max(1, math.floor(win / 60))
  local b = math.floor(now / width)
  local first = b - 59
  local all, gone = fr_ev_read(key), {}
  -- the bucket since falls in: counted when the hash was emptied at since (everything
  -- in it came after), else left out whole (it may hold events from before since)
  local from_since = math.floor(since / width)
  if all['c'] ~= since then from_since = from_since + 1 end
  if since > 0 and from_since > first then first = from_since end
  local ttag = slot .. ':t:'
  local times = all[ttag]
  if not times then times = {}; all[ttag] = times end
  if tonumber(a1) ~= 0 or (f2 and tonumber(a2) ~= 0) then
    if (times[b] or 0) < now then
      times[b] = now
      redis.call('HSET', key, ttag .. b, now)
    end
  end
  local edge = (times[b - 60] or 0) >= now - win and (since <= 0 or from_since <= b - 60)
  for k in pairs(times) do
    if k < b - 60 or (k == b - 60 and not edge) then
      gone[#gone + 1] = ttag .. k
      times[k] = nil
    end
  end
  local s1 = fr_bucket_sum(key, all, slot .. ':' .. f1 .. ':', b, first, a1, gone, edge)
  local s2 = f2 and fr_bucket_sum(key, all, slot .. ':' .. f2 .. ':', b, first, a2, gone, edge)
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  return s1, s2
end

-- Does the rule named `name` (a refusing one: only those are named) refuse `identity`
-- ('' the account) at `now`? Its deny flag as fraud_event writes it.
local function fr_refusing(v, now, name, identity)
  if name == '' or not v.d then return false end
  local field = name
  if identity ~= '' then field = name .. '|' .. identity end
  return (v.d[field] or 0) > now
end

-- An amount (micro-units) as people read it, as core/currencies.py money_text writes
-- it: at least the currency's minor-unit decimals (more where it has them) and its
-- code (1500 JPY, 12.50 EUR); '' code: 2 decimals, no code.
local function fr_money(micros, code, places)
  local sign = ''
  if micros < 0 then sign, micros = '-', -micros end
  local whole = math.floor(micros / 1000000)
  local frac = string.format('%06d', micros - whole * 1000000)
  local keep = #(string.gsub(frac, '0+$', ''))
  places = tonumber(places) or 2
  if places > keep then keep = places end
  local text = sign .. string.format('%d', whole)
  if keep > 0 then text = text .. '.' .. string.sub(frac, 1, keep) end
  if code ~= '' then text = text .. ' ' .. code end
  return text
end

local function fraud_event(KEYS, ARGV)
  local now, id = tonumber(ARGV[1]), ARGV[3]
  fr_ev = {}
  local v = fr_load(KEYS[1])
  local since = v.s or 0
  local ops = cjson.decode(ARGV[4])
  local fired, counts, worst, worst_i = {}, {}, -1, 0
  for i = 1, #ops do
    local o = ops[i]
    local kind, k, slot, win, limit, act, ttl, extra, member =
      o[1], o[2], o[3], o[4], o[5], o[6], o[8], o[9], o[10]
    local key, hit, count = KEYS[k], false, 0
    if kind == 'x' then
      if v.l then
        local ended = member
        for s, lapse in pairs(v.l) do
          if s == ended or lapse * 1000 <= now then v.l[s] = nil; v._dirty = true end
        end
      end
      ttl = 0
    elseif kind == 'u' then  -- an event seen before (a re-delivered CDR) counts once
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
      if redis.call('ZADD', key, 'NX', now, id) == 0 then return {'dup', 0, 0, {}, ''} end
    elseif kind == 'f' and fr_refusing(v, now, o[7], ARGV[2]) then
      -- an Access-Reject of this rule's own refusal: counted, it would renew the
      -- refusal for as long as the gateway retries (the cooldown never ending)
      ttl = 0
    elseif kind == 'c' or kind == 'f' then
      count = fr_count(key, now, since, slot, win, limit, member)
      hit = count > limit
    elseif kind == 's' then
      count = fr_buckets(key, now, since, slot, win, 'm', member)
      hit = count > limit
    elseif kind == 'r' or kind == 'R' then
      -- 'R': a corrected CDR (revision > 0): its call was seized already; member is the
      -- change of its answered flag (-1|1)
      local seized, answered =
        fr_buckets(key, now, since, slot, win, 'a', kind == 'r' and '1' or '0', 'n', member)
      -- limit: the lowest ratio in percent, once the window holds extra calls
      count = math.floor(answered * 100 / seized)
      hit = seized >= extra and answered * 100 < limit * seized
    end
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
    if hit and act ~= 'x' then
      fired[#fired + 1] = i
      fired[#fired + 1] = count
      counts[i] = count
      if fr_rank(act) > worst then worst, worst_i = fr_rank(act), i end
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
    -- the value lives as long as its refusal (fr_save: never shorter than x): written with
    -- the ttl of the event's keys alone (an hour; a caller IP's: its window), a longer
    -- cooldown ended early once its callers stopped for that long (the flag expired
    -- with the value)
    if (v.x or 0) < now + cooldown then v.x = now + cooldown end
    v._dirty = true
    verdict = {'refuse', worst_i, 0, fired, o[7]}
  elseif worst_i > 0 then
    local o = ops[worst_i]
    local shown, limit = counts, o[5]
    if o[1] == 's' then  -- spend: the block's why in the account's currency, not micro-units
      shown = {[worst_i] = fr_money(counts[worst_i], ARGV[5], ARGV[6])}
      limit = fr_money(limit, ARGV[5], ARGV[6])
    end
    verdict = fr_verdict(KEYS, ARGV, now, fired, worst, worst_i, shown, o[4], limit, o[7])
  else
    verdict = {'ok', 0, 0, fired, ''}
  end
  fr_save(now, tonumber(ARGV[7]))
  return verdict
end
