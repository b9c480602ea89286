-- resolve: close the open incident of a key now (an operator dealt with it); the next
-- raise of the key opens a new incident.
-- KEYS[1] {alerts}:inc:KEY   KEYS[2] {alerts}:inc:KEY:calls   KEYS[3] {alerts}:stream
-- KEYS[4] {alerts}:touched (raise.lua: the key's last raise or resolve)
-- ARGV[1] incident key  ARGV[2] now ms  ARGV[3] who  ARGV[4] why
-- ARGV[5] stream max length (approximate)
-- Returns {'resolved', id, count} | {'none'} (no open incident)
local inc, calls, stream = KEYS[1], KEYS[2], KEYS[3]
local cur = redis.call('HMGET', inc, 'id', 'state', 'count', 'last_ms')
if not cur[1] or cur[2] ~= 'open' then return {'none'} end
redis.call('HSET', inc, 'state', 'resolved', 'resolved_ms', ARGV[2], 'resolved_by', ARGV[3],
           'resolved_why', ARGV[4])
local first = redis.call('LRANGE', calls, 0, 9)
redis.call('XADD', stream, 'MAXLEN', '~', ARGV[5], '*', 'event', 'closed', 'id', cur[1],
           'key', ARGV[1], 'count', cur[3], 'last_ms', cur[4],
           'calls', table.concat(first, '\n'), 'why', 'resolved', 'by', ARGV[3],
           'note', ARGV[4], 'closed_ms', ARGV[2])
if KEYS[4] then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1]) end
return {'resolved', cur[1], tonumber(cur[3])}
