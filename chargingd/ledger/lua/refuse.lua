-- refuse: a new session's answer was a refusal after all (its authorize timed out and
-- the gateway was told "charging unavailable", or it was granted too little to pay
-- for one second): drop its hold, if any, and remember the refusal, so a reserve that
-- runs late refuses itself and a retransmitted request gets the same answer.
-- KEYS[1] acct hash   KEYS[2] holds hash   KEYS[3] leases zset   KEYS[4] audit stream
-- KEYS[5] session hash (debited, closed, refused)
-- ARGV[1] session id  ARGV[2] reason (a RefusalReason)  ARGV[3] now ms  ARGV[4] who
-- ARGV[5] audit max entries  ARGV[6] how long the refusal is remembered (ms)
-- Returns {'ok', released} | {'charged'}: the session has debits (accounting came: a real
--   call, nothing done) | {'closed'}: released already, nothing done | {'unknown'}
local acct, holds, leases, stream, sess = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, now = ARGV[1], tonumber(ARGV[3])
local a = redis.call('HMGET', acct, 'balance', 'reserved', 'status', 'status_reason')
if not a[1] then return {'unknown'} end
local st = redis.call('HMGET', sess, 'closed', 'debited')
if st[1] == '1' then return {'closed'} end
if num(st[2]) > 0 then return {'charged'} end
local hold = num(redis.call('HGET', holds, sid))
local leased = redis.call('ZSCORE', leases, sid)
if hold > 0 or leased then
  local reserved = num(a[2]) - hold
  redis.call('HDEL', holds, sid)
  redis.call('ZREM', leases, sid)
  redis.call('HSET', acct, 'reserved', s(reserved), 'updated_ms', s(now))
  audit(stream, ARGV[5], now, ARGV[4], 'refuse', ARGV[2],
        {balance = a[1], reserved = a[2], status = a[3], status_reason = a[4]},
        {balance = a[1], reserved = s(reserved), status = a[3], status_reason = a[4]},
        {'session', sid, 'released', s(hold)})
end
redis.call('HSET', sess, 'refused', ARGV[2])
redis.call('PEXPIRE', sess, ARGV[6])
return {'ok', hold}
