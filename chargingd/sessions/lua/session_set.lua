-- session_set: merge some fields into a session record (sessions/store.py).
-- KEYS[1] = {a:ACC}:r:SID    the session record (a msgpack map, sessions/record.py)
-- ARGV[1] = ttl_s             > 0: the record expires then (closing); 0: keeps its expiry
-- ARGV[2] = a msgpack map of field codes to values
-- KEYS[2..] (a close on a single Redis only: other slots) the call's live locator
--   shards (sess:lc:N, and the older daemons' sess:locs:N: sessions/shards.py): its
--   field ARGV[3] (session id) is dropped from each where it names ARGV[4] (the
--   account), as session_unlocate.lua does, the record gone or not (ARGV[3..4]: ''
--   when there are none)
-- ARGV[5] (optional) the record's stored value as the caller knows it, ARGV[6] the
--   whole new value: written as it is when ARGV[5] is still the stored one (compared
--   byte for byte), without decoding the record (a Stop's closed mark: the caller
--   holds the value its release script read or wrote); any other value is merged
--   with ARGV[2] as without them (docs/performance.md, round 14a)
-- Returns 1 when merged, 0 when the record is gone (nothing written).
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], ARGV[3]) == ARGV[4] then
    redis.call('HDEL', KEYS[i], ARGV[3])
  end
end
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if raw == ARGV[5] then  -- (strings are interned: one comparison)
  if ARGV[1] == '0' then
    redis.call('SET', KEYS[1], ARGV[6], 'KEEPTTL')
  else
    redis.call('SET', KEYS[1], ARGV[6], 'EX', ARGV[1])
  end
  return 1
end
local r = rec_unpack(raw)
for k, v in pairs(cmsgpack.unpack(ARGV[2])) do r[k] = v end
if ARGV[1] == '0' then
  redis.call('SET', KEYS[1], rec_pack(r), 'KEEPTTL')
else
  redis.call('SET', KEYS[1], rec_pack(r), 'EX', ARGV[1])
end
return 1
