-- The fraud rules' Lua: fraud_seen / fraud_check / fraud_remember / fraud_admit /
-- fraud_save (authorize) as functions, and the state they share with
-- fraud_events.lua (fraud_note: a call forgotten, a refusal remembered; fraud_unblock;
-- fraud_event: a CDR or a refusal), loaded after this file by the scripts that need it.
-- Not a script by itself: check.lua, check_ip.lua and admit.lua call them, and the
-- sessions' fused authorize script does too (one round trip). The
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
--   w counters (id: the rule's slot/window s (identities: h): a rule whose
--     window differs (a tariff's override, a changed config) counts apart, its stored
--     buckets never read with another width): one call -> the ms it
--     leaves the window; more -> {width ms, bucket, count, offset of its last call,
--     ...}: a window is NB buckets of width ceil(win / NB), the count the sum of the
--     buckets that hold a call within the window (never fewer than the calls in it;
--     the bucket the window's start cuts through counts whole, so a rule can fire up
--     to one bucket early)
--   h the per-identity counters (id slot/window|identity), as g's, at most G_MAX
--   g the same-range counters (id slot/window|range), as w's, at most G_MAX: a new range
--     beyond it drops the range called once least recently, or, when every range
--     kept was called more than once, the one called least recently
--   n distinct numbers: slot -> {number's hash -> s last called, rounded up} (at most
--     limit + 1)
--   l live calls: session id -> s its entry lapses, rounded up (at most limit + 1 kept)
--     (the session id itself, never a hash of it: a caller may choose its id (the SIP
--     Call-ID) and search one whose hash is a live call's, to be taken for its
--     retransmission and skip every rule)
--   (distinct numbers' hashes: CRC-32, plan.member_hash; two of a window alike, odds
--     ~n^2 / 2^33, count as one: the rule under-counts by one)
--   c countries called: country -> ms of the last call there
--   r recent answers for retransmissions: session id -> {'refuse|RULE' |
--     'block|RULE' | 'known', until ms} (at most R_MAX; each until its time: when
--     full, an answer is kept in a key of its own, {a:ID}:fr:ans:SID, PX the same, and
--     ro says until when such keys may exist: fraud_seen GETs the call's only then)
--   q the last Q_MAX session ids counted (the step-by-step path: a
--     repeat of a call in flight between its check and its reserve)
--   x ms the value lives until (a write never shortens it); p ms of the next prune
--
-- Authorize KEYS and ARGV, as check.lua's call holds them (fraud/engine.py LAYOUT; the
-- fused authorize's call holds them in other places, read there: its own layout,
-- sessions/fused.py FRAUD_LAYOUT). In this file each place is written as $F_ and its name,
-- put in by fraud.fragment(layout) as a number: read in place, no copy of a call's KEYS and
-- ARGV into this layout (docs/fraud-cost.md "Fourteenth round").
-- Authorize KEYS: [1] account value  [2] ledger acct  [3] ledger audit (the block step's
--   keys)  [4] the call's session record {a:ACC}:r:SID (a call the ledger granted)
--   [5] the caller IP's value (or [1] again)  [6] the call's own answer key
--   {a:ID}:fr:ans:SID (a caller IP's script: [1] again)
-- Authorize ARGV: [1] now ms  [2] identity ('' none)  [3] session id  [4] the ops, one
--   flat msgpack array (fixed per rule set and shape of call: compiled.py), 8 fields
--   an op: kind, key index (1 or 5), counter id (the text of 'SLOT/WINDOW_S' for c, i,
--   g, of SLOT for d: compiled.counter_id), window ms, limit, act, rule name ('' when
--   it neither refuses nor blocks), extra (range digits)
--   [5] called number  [6] its country  [7] how long a refusal is remembered (ms)
--   [8] the account value's ttl (ms)  [9] the caller IP value's  [10] the call's client
--   (its gateway: fr_started, below; '' none)
--   [11] the called number's hash  [12..18] when an op may block, the 7 ARGV of
--   the ledger's status step
-- Op kinds: 'c' count per slot, 'i' count per slot and identity, 'g' count per slot and
--   range (the number less its last `extra` digits), 'd' distinct numbers, 'l' live
--   calls (window: how long an entry lives), 'n' a country called before (window: the
--   memory), 'p' the caller IP refused: 1 while its value holds the deny flag of the
--   op's rule (counter id: the rule's name; an identity_scan rule that refuses writes it
--   from the Access-Rejects of unknown identities, fraud_event), else 0 (limit 0; never
--   written)
-- Act: 'a' alert, 'r' refuse, 'b' block, 's' shadow (reported, never acted on),
--   'x' learn only (never fires)
-- Returns {verdict, deciding op (0 none), blocked now 0|1, {op, count, ...} fired,
--          deny rule}  verdict: 'ok' | 'refuse' | 'block' | 'deny' | 'dup'
--          (fraud_seen: 'known' | 'again', its 5th value 'refuse|RULE' or 'block|RULE')

-- An act's rank: the worst fired decides (shadow and learn-only never act).
local function fr_rank(act)
  if act == 'b' then return 3 elseif act == 'r' then return 2 elseif act == 'a' then return 1 end
  return 0
end
local NB = 10      -- buckets per window
local R_MAX = 16   -- remembered answers per account
local G_MAX = 64   -- same-range, and identity, counters per account (docs/fraud.md)
local Q_MAX = 4    -- session ids counted last (step-by-step path)
local DAY_MS = 86400000

local OP = 8  -- fields of an authorize op
local fr_parsed = nil  -- the ops, decoded once per script run
-- The decoded ops by their msgpack text (read only): a Functions library keeps them
-- between calls (sessions/fusedlib.py; an EVALSHA run starts it empty). Keyed by the
-- text itself, so another rule set or shape of call, or a changed config, is another
-- entry, never a stale one; at most OPS_MAX, then it starts over.
local fr_ops_seen, fr_ops_n, OPS_MAX = {}, 0, 256

local function fr_ops(raw)
  if not fr_parsed then
    fr_parsed = fr_ops_seen[raw]
    if not fr_parsed then
      fr_parsed = cmsgpack.unpack(raw)
      if fr_ops_n >= OPS_MAX then fr_ops_seen, fr_ops_n = {}, 0 end
      fr_ops_seen[raw], fr_ops_n = fr_parsed, fr_ops_n + 1
    end
  end
  return fr_parsed
end

-- The values a run read, by key name (an account's and a caller IP's): loaded once,
-- written once (fraud_save) when changed.
local fr_vals = {}

-- This run is a library's (FCALL), whose top level is kept between calls: set by
-- sessions/fusedlib.py's reset; false in a script's run (EVALSHA), which starts afresh.
local fr_lib = false

-- The values this library wrote, decoded, with the bytes it wrote (key -> bytes in
-- fr_kept, key -> table in fr_kept_v: no table of its own per write): a Functions library keeps them between calls (an EVALSHA run starts empty),
-- so a GET that returns those same bytes takes the table instead of decoding them
-- again (what the table holds is what the bytes say: it was packed into them). An entry
-- is taken out when read and put back only when written (SET): a run that fails in
-- between leaves none; a value another script or version wrote meanwhile (a CDR's
-- event, an unblock, an expiry) has other bytes and is decoded. Two generations of at
-- most KEPT_MAX each (a full one becomes the old one, the older dropped): ~1 KB of the
-- Functions' Lua memory a small value (docs/fraud-cost.md "Ninth round").
local fr_kept, fr_kept_old, fr_kept_n, KEPT_MAX = {}, {}, 0, 2048
local fr_kept_v, fr_kept_old_v = {}, {}

local function fr_keep(key, raw, v)
  if fr_kept_n >= KEPT_MAX then
    fr_kept, fr_kept_old, fr_kept_n = {}, fr_kept, 0
    fr_kept_v, fr_kept_old_v = {}, fr_kept_v
  end
  if not fr_kept[key] then fr_kept_n = fr_kept_n + 1 end
  fr_kept[key], fr_kept_v[key] = raw, v
end

local function fr_load(key)
  local v = fr_vals[key]
  if v then return v end
  local raw = redis.call('GET', key)
  local kept, kept_v = fr_kept[key], nil
  if kept then
    kept_v = fr_kept_v[key]
    fr_kept[key], fr_kept_v[key], fr_kept_n = nil, nil, fr_kept_n - 1  -- n: the entries it holds
  else
    kept, kept_v = fr_kept_old[key], fr_kept_old_v[key]
    fr_kept_old[key], fr_kept_old_v[key] = nil, nil
  end
  if not raw then
    v = {}
  elseif kept and kept == raw then  -- strings are interned: one comparison
    v = kept_v
  else
    v = cmsgpack.unpack(raw)
  end
  v.w = v.w or {}
  fr_vals[key] = v
  v._dirty = false
  return v
end

local function fr_write(key, v, px)
  local raw = cmsgpack.pack(v)
  redis.call('SET', key, raw, 'PX', px)
  -- kept for a library's next calls; a script's run (EVALSHA) ends with its kept maps,
  -- and loads nothing again after its writes: nothing to keep there
  if fr_lib then fr_keep(key, raw, v) end
end

local function fr_save(now, ttl)
  for key, v in pairs(fr_vals) do
    if v._dirty then
      v._dirty = nil
      local until_ms = now + ttl  -- math.max(v.x or 0, now + ttl), no call
      if (v.x or 0) > until_ms then until_ms = v.x end
      v.x = until_ms
      fr_write(key, v, until_ms - now)
      v._dirty = false
    end
  end
end

local function fr_size(t)
  local n = 0
  if t then for _ in pairs(t) do n = n + 1 end end
  return n
end

-- Acting on the worst fired op: block through the ledger's status script.
local function fr_block(KEYS, ARGV, now, name, text)
  local base = $F_BLOCK
  if not ARGV[base] then return 0 end  -- no block step (a caller IP's own script)
  local args = {}
  for k = 0, 6 do args[k + 1] = ARGV[base + k] end
  args[4] = text
  local res = ledger_status({KEYS[$F_ACCT], KEYS[$F_AUDIT]}, args)
  if res[1] == 'ok' then
    local v = fr_load(KEYS[$F_VALUE])
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

-- An answer remembered until now + ttl (never forgotten before: a retransmission is
-- never counted again): in the value while it holds fewer than R_MAX, else in the
-- call's own key (answer_key; ro: such keys may exist until then).
local function fr_add_recent(v, now, sid, what, ttl, answer_key)
  local r = v.r or {}
  v.r = r
  local count = 0
  for s, e in pairs(r) do
    if e[2] <= now then r[s] = nil else count = count + 1 end
  end
  v._dirty = true
  if count >= R_MAX and not r[sid] then
    redis.call('SET', answer_key, what, 'PX', ttl)
    v.ro = math.max(v.ro or 0, now + ttl)
    return
  end
  r[sid] = {what, now + ttl}
end

-- @@ END OF THE VALUE'S HELPERS @@ What follows is the authorize rules' own: the
-- scripts off the authorize path (note, unblock, event: fraud_events.lua) are loaded
-- with the part above only (engine.fragment(value_only=True)): a run (EVALSHA) defines
-- every function of its text again, ~60k instructions for the part below
-- (docs/fraud-cost.md "Nineteenth round").

-- A counter's window sum, kept by a library (fr_lib: FCALL; nil in a script's run) for
-- the counter tables it updated, by the table itself (weak keys: gone with the table):
-- fr_sum[t] the calls of its buckets, fr_edge[t] at most the soonest ms one of its
-- buckets stops counting (a bucket counts while now <= its bucket * width + the offset
-- of its last call + the window: the condition below, rearranged), kept for counters
-- called less than half a bucket apart (below). While now <= it every
-- bucket counts: the call is added without the walk over the buckets, which writes the
-- same table as the walk (nothing dropped, nothing moved). Sound because only fr_bucket
-- changes a counter table, and a library takes a value's tables again only when GET
-- returns the very bytes it wrote from them (fr_kept); any other table (decoded, or a
-- script's run) has no entry and is walked. docs/fraud-cost.md "Thirteenth round".
local fr_sum, fr_edge = nil, nil
local FR_WEAK = {__mode = 'k'}
local fr_hits = 0  -- calls added without the walk (tests' probe)

-- A counter: add one call at now, count the window's. A counter of one call is a
-- number (when that call leaves the window: its ms + the window); from the second on,
-- buckets updated in place, each with the offset of its last call: a bucket whose
-- calls all left the window no longer counts (only a bucket the window's start cuts
-- through may count calls already out of it). width: math.ceil(win / NB) (the generated
-- ops pass it as a constant). floor(a / b) as (a - a % b) / b: Lua's a % b is
-- a - floor(a / b) * b, so the same number (integers below 2^53: exact), without a
-- call of math.floor.
local function fr_bucket(w, id, now, win, width)
  local old = w[id]
  local one = type(old) == 'number'  -- (one call of type: a C function)
  if old == nil or (one and old < now) then
    w[id] = now + win
    return 1
  end
  width = width or math.ceil(win / NB)
  local cur = (now - now % width) / width
  if one then  -- the second call in the window
    local at = old - win
    local b = (at - at % width) / width
    if b == cur then
      w[id] = {width, cur, 2, now - cur * width}
    else
      w[id] = {width, b, 1, at - b * width, cur, 1, now - cur * width}
    end
    return 2
  end
  local kept = fr_sum and fr_sum[old]
  if kept and now <= fr_edge[old] then  -- every bucket counts: no walk
    local n = #old
    if old[n - 2] == cur then
      old[n - 1] = old[n - 1] + 1
      old[n] = now - cur * width
    else
      old[n + 1], old[n + 2], old[n + 3] = cur, 1, now - cur * width
    end
    -- its bucket stops counting when this call leaves the window: a new bucket, or the
    -- last one's offset moved back (a clock that went back within the bucket: without
    -- this, the edge kept a bucket the walk drops, as the daemon's port does)
    if now + win < fr_edge[old] then fr_edge[old] = now + win end
    fr_sum[old] = kept + 1
    fr_hits = fr_hits + 1
    return kept + 1
  end
  local from = now - win  -- a call before this is out of the window
  local lo = (from - from % width) / width
  local sum, keep = 0, 1
  for k = 2, #old, 3 do
    local b = old[k]
    if b > lo or (b == lo and b * width + old[k + 2] >= from) then
      if keep + 1 < k then
        old[keep + 1], old[keep + 2], old[keep + 3] = b, old[k + 1], old[k + 2]
      end
      keep = keep + 3
      sum = sum + old[k + 1]
    end
  end
  for k = #old, keep + 1, -1 do old[k] = nil end
  -- a library keeps the sum when the call comes less than half a bucket after the last
  -- one (calls come faster than buckets leave: the next calls may take it); slower, a
  -- walk comes every call or two anyway, so the edge's walk is not added, and a sum
  -- kept before is dropped (the walk changed the table)
  local at, busy = now - cur * width, false
  if keep > 1 and fr_sum then  -- the last call: its bucket's start + its offset
    busy = now - (old[keep - 2] * width + old[keep]) < width / 2
  end
  if keep > 1 and old[keep - 2] == cur then
    old[keep - 1] = old[keep - 1] + 1
    old[keep] = at
  else
    old[keep + 1], old[keep + 2], old[keep + 3] = cur, 1, at
  end
  if busy then  -- the sum, and the soonest a bucket stops counting
    local edge = now + win
    for k = 2, #old, 3 do
      local e = old[k] * width + old[k + 2] + win
      if e < edge then edge = e end
    end
    fr_sum[old], fr_edge[old] = sum + 1, edge
  elseif kept then  -- (setting an absent key to nil would add it)
    fr_sum[old] = nil
  end
  return sum + 1
end

-- Counters of other ids (another identity, range) whose last call left their window;
-- looked for at most every PRUNE_MS (v.p: when next).
local PRUNE_MS = 10000
local function fr_prune_table(w, now)
  for id, c in pairs(w) do
    if type(c) == 'number' then
      if c < now then w[id] = nil end
    elseif c[#c - 2] < (now - now % c[1]) / c[1] - NB - 1 then  -- floor(now / width)
      w[id] = nil
    end
  end
end

local function fr_prune(v, now)
  if (v.p or 0) > now then return end
  v.p = now + PRUNE_MS
  fr_prune_table(v.w, now)
  if v.g then fr_prune_table(v.g, now) end
  if v.h then fr_prune_table(v.h, now) end
end

-- a before b: numbers first, in their order, then strings byte by byte (Lua's < on
-- strings follows the locale's collation, which Redis takes from its environment;
-- Python compares bytes; a key of another type, a value's older layout, is no error):
-- the tie-break of the drops below, so the daemon's port (local.py _before) drops the
-- same entry. Only for entries alike.
local function fr_before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta == 'number' end
  if ta == 'number' then return a < b end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- A new range (or identity: v.h) counter was added (id): beyond G_MAX, drop the range
-- called once whose call is the oldest (its number: when it leaves the window), else
-- the range whose last call is the oldest. A range called again soon after its first
-- call is kept (exact from then on) however many other ranges are called.
-- Of counters alike (the same ms), the least id in byte order (fr_before): what is
-- dropped never depends on the table's order (pairs: a table decoded, or built call by
-- call, or the daemon's port in chargingd/fraud/local.py, each in its own order).
local function fr_cap_ranges(g, id)
  local n, once, once_at, many, many_at = 0, nil, nil, nil, nil
  for k, c in pairs(g) do
    n = n + 1
    if k ~= id then
      if type(c) == 'number' then
        if not once_at or c < once_at or (c == once_at and fr_before(k, once)) then
          once, once_at = k, c
        end
      else
        local last = c[#c - 2] * c[1] + c[#c]
        if not many_at or last < many_at or (last == many_at and fr_before(k, many)) then
          many, many_at = k, last
        end
      end
    end
  end
  if n > G_MAX then g[once or many] = nil end
end

-- A counter in a capped part of the value (v.g ranges, v.h identities): counted, and a
-- new one beyond G_MAX drops another (fr_cap_ranges).
local function fr_capped(v, part, id, now, win, width)
  local t = v[part] or {}
  v[part] = t
  local fresh = t[id] == nil
  local count = fr_bucket(t, id, now, win, width)
  if fresh then fr_cap_ranges(t, id) end
  return count
end

-- Distinct numbers of a slot within the window, this one called now; at most limit + 1
-- kept (the oldest dropped).
local function fr_distinct(v, now, slot, win, limit, number)
  local all = v.n or {}
  v.n = all
  local id = slot  -- its text (compiled.counter_id)
  local n = all[id] or {}
  all[id] = n
  local up = now + 999
  n[number] = (up - up % 1000) / 1000  -- seconds, rounded up (ceil): never counts fewer
  local count, from = 0, now - win
  for k, ms in pairs(n) do
    if ms * 1000 < from then n[k] = nil else count = count + 1 end
  end
  if count > limit + 1 then
    -- the oldest; of numbers last called in the same second, the least hash (never
    -- the table's order: fr_cap_ranges)
    local oldest, oldest_ms = nil, nil
    for k, ms in pairs(n) do
      if not oldest_ms or ms < oldest_ms or (ms == oldest_ms and fr_before(k, oldest)) then
        oldest, oldest_ms = k, ms
      end
    end
    n[oldest] = nil
  end
  return count
end

-- What fr_live's scan of the live calls found (this run's: reset with fr_vals), for
-- fraud_admit to add the call without scanning them again: the value, its live calls
-- table (nil: none), now, the session id, the other live calls, the lapsed ones.
local fr_scan_v, fr_scan_l, fr_scan_now, fr_scan_sid, fr_scan_n, fr_scan_gone = nil

-- Live calls: entries whose lapse is still ahead, this one counted once.
local function fr_live(v, now, sid)
  local n, gone = 0, nil
  local l = v.l
  if l then
    for s, lapse in pairs(l) do
      if lapse * 1000 > now then
        if s ~= sid then n = n + 1 end
      else
        gone = gone or {}
        gone[#gone + 1] = s
      end
    end
  end
  fr_scan_v, fr_scan_l, fr_scan_now, fr_scan_sid, fr_scan_n, fr_scan_gone = v, l, now, sid, n, gone
  return n + 1
end

-- fraud_admit's 'l' op (window win, limit): the call is live (at most limit + 1
-- entries kept, the soonest to lapse dropped).
local function fr_admit_live(v, now, sid, win, limit)
  local scanned = fr_scan_v == v and fr_scan_l == v.l and fr_scan_now == now
                  and fr_scan_sid == sid and fr_scan_n + 1 <= limit + 1
  fr_scan_v = nil  -- used once (a second 'l' op scans)
  local l = v.l or {}
  v.l = l
  local up = now + win + 999
  l[sid] = (up - up % 1000) / 1000  -- ceil((now + win) / 1000)
  if scanned then
    -- fr_live's scan (nothing changed the live calls since): the lapsed ones dropped
    -- as the loop below drops them, no entry beyond the limit to drop
    local gone = fr_scan_gone
    if gone then
      for j = 1, #gone do
        if gone[j] ~= sid then l[gone[j]] = nil end
      end
    end
  else
    local n, first, first_ms = 0, nil, nil
    for s, lapse in pairs(l) do
      if lapse * 1000 <= now then
        l[s] = nil
      else
        n = n + 1
        -- of calls lapsing in the same second, the least session id (fr_cap_ranges)
        if not first_ms or lapse < first_ms or (lapse == first_ms and fr_before(s, first)) then
          first, first_ms = s, lapse
        end
      end
    end
    if n > limit + 1 then l[first] = nil end
  end
  v._dirty = true
end

-- fraud_admit's 'n' op: the country cc is known from now on (rewritten at most once
-- per memo ms).
local function fr_admit_country(v, now, cc, memo)
  local c = v.c or {}
  v.c = c
  if (c[cc] or 0) < now - memo then
    c[cc] = now
    v._dirty = true
  end
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


-- A record of the call that is no authorize's: set by a caller with session records
-- (the sessions' Lua, defined after this file in the scripts that call fraud_seen:
-- sessions/fused.py started_lua), nil otherwise (every record an authorize's).
-- fr_started(key, ARGV): true when the record at key (which exists) is one the call's
-- accounting Start adopted before its Access-Request came (FreeSWITCH: mod_radius_cdr's
-- Start at routing, mod_xml_radius's radius_auth after it), live and of the same client:
-- that Access-Request is the call's first, decided by the rules as a new call (a
-- retransmission of it is still known: by the answer the call's admission remembers
-- (fraud_started), then by its record, which its authorize made an authorize's).
local fr_started = nil

-- A retransmitted authorize (same session id, on any daemon) is answered as the first
-- one was, and counted once: nil for a new call; {'known', ...} when the ledger
-- answered it already (its record exists, it is live, the ledger refused it: its
-- reserve answers the same again); {'again', 0, 0, {}, 'refuse|RULE' or 'block|RULE'}
-- when a rule refused it. A record its Start adopted (fr_started) is no answer: the
-- remembered ones decide. Only a call with a record pays for that look.
-- now: ARGV[1] + 0 (a number already in the fused authorize, whose wrapper converts it
-- once; a digit string in check.lua's: the same conversion as tonumber's, no call).
-- Its second value: true when the call's record is one its Start adopted (the caller
-- remembers the call's admission: fraud_known, for a repeat before its authorize has
-- made that record its own).
local function fraud_seen(KEYS, ARGV)
  local started = false
  if redis.call('EXISTS', KEYS[$F_RECORD]) == 1 then
    started = fr_started and fr_started(KEYS[$F_RECORD], ARGV)
    if not started then return {'known', 0, 0, {}, ''} end
  end
  local now, sid = ARGV[$F_NOW] + 0, ARGV[$F_SID]
  local v = fr_load(KEYS[$F_VALUE])
  local e = v.r and v.r[sid]
  local what = e and e[2] > now and e[1]
  if not what and (v.ro or 0) > now then what = redis.call('GET', KEYS[$F_ANSWER]) end
  if what then
    if what == 'known' then return {'known', 0, 0, {}, ''} end
    return {'again', 0, 0, {}, what}
  end
  if v.l and v.l[sid] then return {'known', 0, 0, {}, ''} end
  if v.q then
    for _, s in ipairs(v.q) do
      if s == sid then return {'known', 0, 0, {}, ''} end
    end
  end
  return nil, started
end

-- 1 when fraud_check found a country fraud_admit would write (admit.lua is worth
-- sending: check.lua returns it as the verdict's 6th value).
local fr_learn = 0

-- The ops of a rule set and shape of call as Lua of their own (a library's runs only:
-- fr_lib, set by sessions/fusedlib.py's reset): the loop below unrolled, each op's
-- kind, counter id, window, limit and act written in as constants, compiled once per
-- ops text (loadstring) and kept beside fr_ops_seen, so a call runs no op dispatch and
-- fetches no op field. It does what the loop does, op by op, in the same order (the
-- same helpers, the same reads and writes of the values: docs/fraud-cost.md "Tenth
-- round"); tests/sessions/test_fused_library.py compares both on a sequence of calls.
-- An EVALSHA run (Redis 6, the step-by-step path) would compile on every call: there
-- the loop runs.
local fr_gen_seen, fr_gen_n = {}, 0

local function fr_lit(x)
  if type(x) == 'number' then return string.format('%.17g', x) end
  return string.format('%q', x)
end

local function fr_generate(ops)
  local src = {
    'local fr_load, fr_bucket, fr_capped, fr_distinct, fr_live, fr_size, fr_verdict,'
      .. ' fr_admit_live, fr_admit_country = ...',
    -- the verdict of a call no rule fired on (one table for all such calls of these ops:
    -- read, never changed, by the fused authorize, the only caller of a generated check;
    -- the loop's fr_verdict builds its own; made here, not at the top level, which an
    -- EVALSHA runs on every call)
    "local FR_OK = {'ok', 0, 0, {}, ''}",
    'local check = function(KEYS, ARGV, now, identity, sid, acc)',
    "local fired, counts, worst, worst_i, wwin, wlimit, wname = nil, nil, -1, 0, 0, 0, ''",
    'local learn, count = 0, 0',
  }
  local function add(line) src[#src + 1] = line end
  local loaded = {}  -- the values' locals (v1, v5): loaded once, before the first op
  for i = 1, #ops / OP do
    local k = ops[(i - 1) * OP + 2]
    if not loaded[k] then
      loaded[k] = true
      -- (an op's key index, 1 or 5: fraud.lua's own layout's; this call's place of it)
      add('local v' .. k .. ' = fr_load(KEYS[' .. fr_lit(k == 5 and $F_IP or $F_VALUE) .. '])')
    end
  end
  for i = 1, #ops / OP do
    local o = (i - 1) * OP
    local kind, k, slot, win, limit, act = ops[o + 1], ops[o + 2], ops[o + 3], ops[o + 4],
                                           ops[o + 5], ops[o + 6]
    local lim, v, width = limit, 'v' .. k, fr_lit(math.ceil(win / NB))
    if kind == 'c' then
      add('count = fr_bucket(' .. v .. '.w, ' .. fr_lit(slot) .. ', now, ' .. fr_lit(win) .. ', '
          .. width .. ')')
    elseif kind == 'i' then
      add('count = fr_capped(' .. v .. ", 'h', " .. fr_lit(slot .. '|') .. ' .. identity, now, '
          .. fr_lit(win) .. ', ' .. width .. ')')
    elseif kind == 'g' then
      add('do local n = ARGV[$F_NUMBER] local e = #n - ' .. fr_lit(ops[o + 8])
          .. ' if e < 2 then e = 2 end count = fr_capped(' .. v .. ', \'g\', '
          .. fr_lit(slot .. '|') .. ' .. string.sub(n, 1, e), now, ' .. fr_lit(win) .. ', '
          .. width .. ') end')
    elseif kind == 'd' then
      add('count = fr_distinct(' .. v .. ', now, ' .. fr_lit(slot) .. ', ' .. fr_lit(win) .. ', '
          .. fr_lit(limit) .. ', ARGV[$F_HASH] + 0)')
    elseif kind == 'l' then
      add('count = fr_live(' .. v .. ', now, sid)')
    elseif kind == 'p' then
      add('do local d = ' .. v .. '.d count = (d and (d[' .. fr_lit(slot) .. '] or 0) > now) and 1 or 0 end')
    elseif kind == 'n' then
      add('do local last = (acc.c and acc.c[ARGV[$F_COUNTRY]]) or 0 count = 0')
      add('if last < now - ' .. fr_lit(win) .. ' then count = fr_size(acc.c) end')
      add('if last < now - ' .. fr_lit(math.min(DAY_MS, win / 100)) .. ' then learn = 1 end end')
      lim = 0
    else
      add('count = 0')
    end
    if kind ~= 'l' and kind ~= 'n' and kind ~= 'p' then add(v .. '._dirty = true') end
    if act ~= 'x' then
      add('if count > ' .. fr_lit(lim) .. ' then')
      add('if not fired then fired, counts = {}, {} end')
      add('fired[#fired + 1] = ' .. i .. ' fired[#fired + 1] = count counts[' .. i .. '] = count')
      add('if ' .. fr_rank(act) .. ' > worst then worst, worst_i = ' .. fr_rank(act) .. ', '
          .. i .. ' wwin, wlimit, wname = ' .. fr_lit(win) .. ', ' .. fr_lit(limit) .. ', '
          .. fr_lit(ops[o + 7]) .. ' end')
      add('end')
    end
  end
  add('if not fired then return FR_OK, learn end')
  add('return fr_verdict(KEYS, ARGV, now, fired, worst, worst_i, counts, wwin, wlimit, wname), learn')
  add('end')
  -- fraud_admit's 'ln' (the fused authorize's): its op loop, unrolled
  add('local admit = function(KEYS, ARGV, now, sid)')
  add('local v = fr_load(KEYS[$F_VALUE])')
  for i = 1, #ops / OP do
    local o = (i - 1) * OP
    local kind, win = ops[o + 1], ops[o + 4]
    if kind == 'l' then
      add('fr_admit_live(v, now, sid, ' .. fr_lit(win) .. ', ' .. fr_lit(ops[o + 5]) .. ')')
    elseif kind == 'n' then
      add('fr_admit_country(v, now, ARGV[$F_COUNTRY], ' .. fr_lit(math.min(DAY_MS, win / 100))
          .. ')')
    end
  end
  add('end')
  add('return {check, admit}')
  return loadstring(table.concat(src, '\n'))(fr_load, fr_bucket, fr_capped, fr_distinct,
                                              fr_live, fr_size, fr_verdict,
                                              fr_admit_live, fr_admit_country)
end

-- The generated check and admit of this call's ops ({check, admit}; nil: not a
-- library's run, or ops the
-- generator could not compile, kept as false: a Redis whose Lua has no loadstring, a
-- sandbox that removes it; then the loop decides, as it does for EVALSHA, rather than
-- every authorize failing).
-- The values' ttls an ops text needs (fraud_save's ARGV[8], [9]: compiled.py's
-- Template.ttl_ms, ip_ttl_ms): KEY_MARGIN_MS (plan.py's, defined ahead of this file by
-- fraud.fragment()) beyond the longest window of the ops counting in each value (key
-- index 1 the account's, 5 the caller IP's), at least KEY_MARGIN_MS.
local function fr_ttls_of(ops)
  local ttl, ip = KEY_MARGIN_MS, KEY_MARGIN_MS
  for o = 0, #ops - OP, OP do
    local t = ops[o + 4] + KEY_MARGIN_MS
    if ops[o + 2] == 1 then
      if t > ttl then ttl = t end
    elseif t > ip then
      ip = t
    end
  end
  return ttl, ip
end

local function fr_gen(ARGV)
  if not fr_lib then return nil end
  if not fr_sum then fr_sum, fr_edge = setmetatable({}, FR_WEAK), setmetatable({}, FR_WEAK) end
  local raw = ARGV[$F_OPS]
  local f = fr_gen_seen[raw]
  if f == nil then
    local ok, made = pcall(fr_generate, fr_ops(raw))
    if ok then made[3], made[4] = fr_ttls_of(fr_ops(raw)) end  -- (fraud_ttls)
    f = ok and made or false
    if fr_gen_n >= OPS_MAX then fr_gen_seen, fr_gen_n = {}, 0 end
    fr_gen_seen[raw], fr_gen_n = f, fr_gen_n + 1
  end
  return f or nil
end

-- The account value's and the caller IP value's ttls of this call's ops (what
-- fraud_save reads in ARGV[8], [9]), for a caller that does not send them (the fused
-- authorize): a library's worked out once per ops text, with its generated Lua; a
-- script's run (EVALSHA) from the ops it decoded.
local function fraud_ttls(ARGV)
  local gen = fr_gen(ARGV)
  if gen then return gen[3], gen[4] end
  return fr_ttls_of(fr_ops(ARGV[$F_OPS]))
end

local function fraud_check(KEYS, ARGV)
  local now, identity, sid = ARGV[$F_NOW] + 0, ARGV[$F_IDENTITY], ARGV[$F_SID]
  local acc = fr_load(KEYS[$F_VALUE])
  local deny = fr_deny(acc, now, identity)
  if deny then return {'deny', 0, 0, {}, deny} end
  local gen = fr_gen(ARGV)
  if gen then
    local verdict, learn = gen[1](KEYS, ARGV, now, identity, sid, acc)
    if learn == 1 then fr_learn = 1 end
    return verdict
  end
  local ops = fr_ops(ARGV[$F_OPS])
  local fired, counts, worst, worst_i = {}, {}, -1, 0
  local wwin, wlimit, wname = 0, 0, ''
  for i = 1, #ops / OP do
    local o = (i - 1) * OP
    local kind, k, slot, win, limit, act = ops[o + 1], ops[o + 2], ops[o + 3], ops[o + 4],
                                           ops[o + 5], ops[o + 6]
    local v = fr_load(KEYS[k == 5 and $F_IP or $F_VALUE])
    local hit, count = false, 0
    -- (the counting kinds set the value dirty: 'l', 'n' and 'p' write nothing here)
    if kind == 'c' then
      count = fr_bucket(v.w, slot, now, win)  -- per rule and window ('SLOT/WIN_S')
      v._dirty = true
    elseif kind == 'i' then
      -- per identity, capped like the ranges: a PBX with thousands of extensions
      count = fr_capped(v, 'h', slot .. '|' .. identity, now, win)
      v._dirty = true
    elseif kind == 'g' then
      local number = ARGV[$F_NUMBER]
      local range = string.sub(number, 1, math.max(2, #number - ops[o + 8]))  -- destinations.py
      count = fr_capped(v, 'g', slot .. '|' .. range, now, win)
      v._dirty = true
    elseif kind == 'd' then
      count = fr_distinct(v, now, slot, win, limit, tonumber(ARGV[$F_HASH]))
      v._dirty = true
    elseif kind == 'l' then
      count = fr_live(v, now, sid)
    elseif kind == 'n' then
      local last = (acc.c and acc.c[ARGV[$F_COUNTRY]]) or 0
      if last < now - win then  -- a country not called within the memory: any history?
        count = fr_size(acc.c)
      end
      if last < now - math.min(DAY_MS, win / 100) then fr_learn = 1 end  -- fraud_admit
      limit = 0
    elseif kind == 'p' then  -- an identity_scan rule's deny flag in the caller IP's value
      count = (v.d and (v.d[slot] or 0) > now) and 1 or 0
    end
    hit = count > limit
    if hit and act ~= 'x' then
      fired[#fired + 1] = i
      fired[#fired + 1] = count
      counts[i] = count
      local rank = fr_rank(act)
      if rank > worst then
        worst, worst_i = rank, i
        wwin, wlimit, wname = win, ops[o + 5], ops[o + 7]
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
  local now, sid = ARGV[$F_NOW] + 0, ARGV[$F_SID]
  if fr_lib and kinds == 'ln' then  -- the fused authorize's: generated in a library's run
    local gen = fr_gen(ARGV)
    if gen then return gen[2](KEYS, ARGV, now, sid) end
  end
  local live, country = string.find(kinds, 'l', 1, true), string.find(kinds, 'n', 1, true)
  local v = fr_load(KEYS[$F_VALUE])
  local ops = fr_ops(ARGV[$F_OPS])
  for i = 1, #ops / OP do
    local o = (i - 1) * OP
    local kind, win = ops[o + 1], ops[o + 4]
    if kind == 'l' and live then
      fr_admit_live(v, now, sid, win, ops[o + 5])
    elseif kind == 'n' and country then
      fr_admit_country(v, now, ARGV[$F_COUNTRY], math.min(DAY_MS, win / 100))
    end
  end
end

-- fraud_check refused the call: remember which rule, for its retransmissions.
local function fraud_remember(KEYS, ARGV, verdict)
  local name = verdict[5]
  if verdict[1] ~= 'deny' then name = fr_ops(ARGV[$F_OPS])[(verdict[2] - 1) * OP + 7] end
  local how = 'refuse'
  if verdict[1] == 'block' then how = 'block' end
  fr_add_recent(fr_load(KEYS[$F_VALUE]), tonumber(ARGV[$F_NOW]), ARGV[$F_SID],
                how .. '|' .. name, tonumber(ARGV[$F_REFUSAL]), KEYS[$F_ANSWER])
end

-- The ledger answered a call the rules counted by refusing it (no credit): its
-- retransmissions go to the ledger again, not to the rules.
local function fraud_known(KEYS, ARGV)
  fr_add_recent(fr_load(KEYS[$F_VALUE]), tonumber(ARGV[$F_NOW]), ARGV[$F_SID], 'known',
                tonumber(ARGV[$F_REFUSAL]), KEYS[$F_ANSWER])
end

-- The step-by-step path counted this call (check.lua): a repeat while it is between
-- its check and its reserve is the same call.
local function fraud_counted(KEYS, ARGV)
  local v = fr_load(KEYS[$F_VALUE])
  local q = v.q or {}
  table.insert(q, 1, ARGV[$F_SID])
  if #q > Q_MAX then table.remove(q) end
  v.q = q
  v._dirty = true
end

-- Write the values this run changed: the account's living at least ARGV[8] ms from
-- now, the caller IP's ARGV[9] (the longest window of their ops), either never less
-- than it did.
local function fraud_save(KEYS, ARGV)
  local now = ARGV[$F_NOW] + 0
  local ipk, key = KEYS[$F_IP], KEYS[$F_VALUE]
  local ip = fr_vals[ipk]
  if ip and ip._dirty and ipk ~= key then
    fr_prune(ip, now)
    ip._dirty = nil
    fr_vals[ipk] = nil
    local until_ms = now + ARGV[$F_IP_TTL]  -- math.max(ip.x or 0, now + ARGV[9]), no call
    if (ip.x or 0) > until_ms then until_ms = ip.x end
    ip.x = until_ms
    fr_write(ipk, ip, ip.x - now)
  end
  local v = fr_vals[key]
  if v and v._dirty then fr_prune(v, now) end
  fr_save(now, ARGV[$F_TTL] + 0)
end

