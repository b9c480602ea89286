-- session_create: write a new live session record unless one exists (sessions/store.py).
-- KEYS[1] = {a:ACC}:r:SID    the session record (a msgpack map, sessions/record.py)
-- KEYS[2] = {a:ACC}:calls    live session ids of the account (hash: SID -> '')
-- ARGV[1] = ttl_s             the record's TTL
-- ARGV[2] = session id
-- ARGV[3] = deadline ms on Redis's clock ('0' none): an authorize's write that runs
--           later (its caller gave up: Redis stalled) writes nothing
-- ARGV[4] = the record's stored value
-- With KEYS[3] (the ledger's account, an authorize's write): ARGV[5..9] the ledger's
--   account_check ARGV (status only): an account no longer active (blocked, suspended
--   since the reserve) gets no record, so a block's cut of its live calls, which
--   follows the block, cannot miss a call authorized at the same moment.
-- Returns 1 when created, 0 when a record exists (replayed authorize, reused id),
-- -1 too late, {'inactive', status, reason} | {'stale'} the account is not active.
if ARGV[3] ~= '0' then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[3]) then
    return -1
  end
end
if KEYS[3] and redis.call('EXISTS', KEYS[1]) == 0 then  -- a replay keeps its record
  local chk = ledger_account_check({KEYS[3]}, {unpack(ARGV, 5, 9)})
  if chk[1] ~= 'ok' then return chk end
end
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], '')  -- no expiry: emptied by the closes (store.py)
return 1
