-- session_create: write a new live session record unless one exists (sessions/store.py).
-- KEYS[1] = {a:ACC}:r:SID    the session record (a msgpack map, sessions/record.py)
-- KEYS[2] = {a:ACC}:live     live session ids of the account
-- ARGV[1] = ttl_s             record and live-set TTL
-- ARGV[2] = session id
-- ARGV[3] = deadline ms on Redis's clock ('0' none): an authorize's write that runs
--           later (its caller gave up: Redis stalled) writes nothing
-- ARGV[4] = the record's stored value
-- Returns 1 when created, 0 when a record exists (replayed authorize, reused id),
-- -1 too late.
if ARGV[3] ~= '0' then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[3]) then
    return -1
  end
end
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[1]) then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
