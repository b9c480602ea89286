-- lastseen_shards: read every last-seen shard of ONE gateway in one call (sessions/
-- shards.py): the shards share the gateway's hash tag (one slot, one Cluster node), so a
-- reader sends one command per gateway instead of one per shard.
-- KEYS  every shard of the gateway, in shard order (KEYS[n + 1] is shard n)
-- ARGV[1] 'count'                   -> the gateway's live calls (the sum of ZCARD)
-- ARGV[1] 'oldest', ARGV[2] max score (inclusive, '+inf' for all), ARGV[3] limit >= 1
--   -> flat {shard, member, score, ...}: the `limit` entries of all shards with the
--   lowest scores <= max, lowest first (ties: member, then shard), as the gateway's one
--   zset would give them. Each shard is read up to `limit`, and only up to the worst
--   score kept once `limit` are known (nothing above it can be among them).
-- ARGV[1] 'range', ARGV[2] max score, ARGV[3] per-shard limit (-1: all)
--   -> flat {shard, member, score, ...} of each shard's lowest (up to the limit), in
--   shard order, unsorted (the caller sorts: big replies are not sorted in here).
-- Scores are returned as Redis wrote them (strings); members as stored ("ACC\0SID").
-- Cost: one multi-key EXISTS answers an idle gateway (~6 us for 128 shards) and counts
-- the shards that hold calls; a ZRANGEBYSCORE (~0.8 us) per such shard, found by a ZCARD
-- (~0.2 us) each when most shards are empty (a gateway with few calls).
local op = ARGV[1]
local limit = tonumber(ARGV[3])
if op ~= 'count' and op ~= 'range' and op ~= 'oldest' then
  return redis.error_reply('lastseen_shards: unknown operation')
end
if op == 'oldest' and (not limit or limit < 1) then
  return redis.error_reply('lastseen_shards: bad limit')
end
local present = redis.call('EXISTS', unpack(KEYS))
if present == 0 then
  if op == 'count' then return 0 end
  return {}
end
local sparse = present * 2 < #KEYS
local function holds(key)
  return not sparse or redis.call('ZCARD', key) > 0
end
if op == 'count' then
  local n = 0
  for i = 1, #KEYS do n = n + redis.call('ZCARD', KEYS[i]) end
  return n
end
local max = ARGV[2]
local out = {}
if op == 'range' then
  for i = 1, #KEYS do
    if holds(KEYS[i]) then
      local r = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', max, 'WITHSCORES', 'LIMIT', 0, limit)
      for j = 1, #r, 2 do
        out[#out + 1] = i - 1
        out[#out + 1] = r[j]
        out[#out + 1] = r[j + 1]
      end
    end
  end
  return out
end
local function less(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end
local kept = {} -- {score, member, shard, score as written}
local bound = max
for i = 1, #KEYS do
  if holds(KEYS[i]) then
    local r = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', bound, 'WITHSCORES', 'LIMIT', 0, limit)
    for j = 1, #r, 2 do
      kept[#kept + 1] = {tonumber(r[j + 1]), r[j], i - 1, r[j + 1]}
    end
    if #kept >= 2 * limit then
      table.sort(kept, less)
      for k = #kept, limit + 1, -1 do kept[k] = nil end
      bound = kept[limit][4]
    end
  end
end
table.sort(kept, less)
for k = 1, math.min(limit, #kept) do
  local e = kept[k]
  out[#out + 1] = e[3]
  out[#out + 1] = e[2]
  out[#out + 1] = e[4]
end
return out
