-- upgrade: merge an account's fraud keys of the version before the one value
-- (a0375d8: {a:ID}:fr:st, :fr:live, :fr:cc) into its value {a:ID}:fr:v, then delete
-- them. Idempotent (a merge: the later time wins, a flag already set stays) and atomic:
-- two daemons starting at once merge each account once (the second finds no old key).
-- KEYS [1] the value  [2] the old state hash (since, deny:RULE[|IDENTITY] -> until ms,
--   blocked_by, blocked_ms, unblocked_by)  [3] the old live calls (zset: session id ->
--   ms its entry lapses)  [4] the old countries (hash: country -> ms of the last call)
-- ARGV [1] now ms  [2] the value's least ttl (ms)
-- Returns {live calls merged, deny flags merged, 1 when the value was written}
local now = tonumber(ARGV[1])
local raw = redis.call('GET', KEYS[1])
local v = {}
if raw then v = cmsgpack.unpack(raw) end
local keep = tonumber(ARGV[2])
local pttl = redis.call('PTTL', KEYS[1])
if pttl > keep then keep = pttl end
local live, deny, changed = 0, 0, false
local st = redis.call('HGETALL', KEYS[2])
local old = {}
for i = 1, #st, 2 do old[st[i]] = st[i + 1] end
for f, val in pairs(old) do
  local until_ms = tonumber(val)
  if string.sub(f, 1, 5) == 'deny:' and until_ms and until_ms > now then
    local rule = string.sub(f, 6)
    v.d = v.d or {}
    if (v.d[rule] or 0) < until_ms then v.d[rule] = until_ms end
    if until_ms - now > keep then keep = until_ms - now end
    deny, changed = deny + 1, true
  end
end
local since = tonumber(old['since'] or '0') or 0
if since > (v.s or 0) then
  v.s, changed = since, true
  if old['unblocked_by'] then v.ub = old['unblocked_by'] end
end
local blocked_ms = tonumber(old['blocked_ms'] or '0') or 0
if old['blocked_by'] and not v.b and blocked_ms >= (v.s or 0) then
  v.b, v.bm, changed = old['blocked_by'], blocked_ms, true
end
local calls = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #calls, 2 do
  local lapse = tonumber(calls[i + 1])
  local s = math.ceil(lapse / 1000)
  v.l = v.l or {}
  if (v.l[calls[i]] or 0) < s then v.l[calls[i]] = s end
  if lapse - now > keep then keep = lapse - now end
  live, changed = live + 1, true
end
local cc = redis.call('HGETALL', KEYS[4])
for i = 1, #cc, 2 do
  local ms = tonumber(cc[i + 1]) or 0
  v.c = v.c or {}
  if (v.c[cc[i]] or 0) < ms then v.c[cc[i]], changed = ms, true end
end
if changed then
  v.w = v.w or {}
  v.x = math.max(v.x or 0, now + keep)
  redis.call('SET', KEYS[1], cmsgpack.pack(v), 'PX', v.x - now)
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {live, deny, changed and 1 or 0}
