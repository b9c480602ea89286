-- raise: count one occurrence of an incident; open the incident when none is open.
-- One incident per key at a time: a raise within dedup_window_ms of the incident's
-- last occurrence only counts (and keeps the call); a raise after a quiet window (or
-- after the incident was resolved) closes the old one in the stream and opens a new one.
-- KEYS[1] {alerts}:inc:KEY  hash: the latest incident of this key
-- KEYS[2] {alerts}:inc:KEY:calls  list: its triggering calls (the first calls_kept)
-- KEYS[3] {alerts}:stream  one 'opened' and one 'closed' entry per incident
-- KEYS[4] {alerts}:touched  zset: incident key -> ms of its last raise or resolve (the
--   listing's --since: incidents opened before it and counted or resolved since)
-- ARGV[1] incident key  ARGV[2] kind  ARGV[3] severity  ARGV[4] summary
-- ARGV[5] details (JSON object)  ARGV[6] call ('' none)  ARGV[7] now ms
-- ARGV[8] dedup window ms  ARGV[9] retention ms  ARGV[10] calls kept
-- ARGV[11] stream max length (approximate)
-- Returns {'opened', id} | {'counted', id, count}
local inc, calls, stream = KEYS[1], KEYS[2], KEYS[3]
local key, call, now = ARGV[1], ARGV[6], tonumber(ARGV[7])
local window, retention, kept = tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])

local function s(n) return string.format('%d', n) end

local cur = redis.call('HMGET', inc, 'id', 'last_ms', 'state', 'count', 'first_ms')
if cur[1] and cur[3] == 'open' and now - tonumber(cur[2]) < window then
  local count = redis.call('HINCRBY', inc, 'count', 1)
  if now > tonumber(cur[2]) then redis.call('HSET', inc, 'last_ms', s(now)) end
  if call ~= '' and redis.call('LLEN', calls) < kept then redis.call('RPUSH', calls, call) end
  if KEYS[4] then
    redis.call('ZADD', KEYS[4], now, key)
    redis.call('PEXPIRE', KEYS[4], retention)
  end
  redis.call('PEXPIRE', inc, retention)
  redis.call('PEXPIRE', calls, retention)
  return {'counted', cur[1], count}
end

local trim = {'MAXLEN', '~', ARGV[11]}
if cur[1] and cur[3] == 'open' then  -- quiet for a whole window: that incident is over
  local first = redis.call('LRANGE', calls, 0, 9)
  redis.call('XADD', stream, trim[1], trim[2], trim[3], '*', 'event', 'closed',
             'id', cur[1], 'key', key, 'count', cur[4], 'last_ms', cur[2],
             'calls', table.concat(first, '\n'), 'why', 'quiet', 'closed_ms', cur[2])
end
local id = redis.call('XADD', stream, trim[1], trim[2], trim[3], '*', 'event', 'opened',
                      'key', key, 'kind', ARGV[2], 'severity', ARGV[3], 'summary', ARGV[4],
                      'details', ARGV[5], 'call', call, 'first_ms', s(now))
redis.call('DEL', inc, calls)
redis.call('HSET', inc, 'id', id, 'key', key, 'kind', ARGV[2], 'severity', ARGV[3],
           'summary', ARGV[4], 'details', ARGV[5], 'first_ms', s(now), 'last_ms', s(now),
           'count', '1', 'state', 'open')
if call ~= '' then redis.call('RPUSH', calls, call) end
if KEYS[4] then  -- (an incident's hash outlives its last touch by retention: so does this)
  redis.call('ZADD', KEYS[4], now, key)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. s(now - tonumber(retention)))
  redis.call('PEXPIRE', KEYS[4], retention)
end
redis.call('PEXPIRE', inc, retention)
redis.call('PEXPIRE', calls, retention)
return {'opened', id}
