-- session_set: merge some fields into a session record (sessions/store.py).
-- KEYS[1] = {a:ACC}:r:SID    the session record (a msgpack map, sessions/record.py)
-- ARGV[1] = ttl_s             > 0: the record expires then (closing); 0: keeps its expiry
-- ARGV[2] = a msgpack map of field codes to values
-- KEYS[2] (a close on a single Redis only: another slot) sess:locs:N, the call's live
--   locator shard: its field ARGV[3] (session id) is dropped if it names ARGV[4]
--   (the account), as session_unlocate.lua does, the record gone or not
-- Returns 1 when merged, 0 when the record is gone (nothing written).
if KEYS[2] and redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[4] then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local r = cmsgpack.unpack(raw)
for k, v in pairs(cmsgpack.unpack(ARGV[2])) do r[k] = v end
if ARGV[1] == '0' then
  redis.call('SET', KEYS[1], cmsgpack.pack(r), 'KEEPTTL')
else
  redis.call('SET', KEYS[1], cmsgpack.pack(r), 'EX', ARGV[1])
end
return 1
