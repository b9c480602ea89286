-- sweep: reclaim one account's expired holds (called by the sweeper, for every account
-- of the global hold index whose visit time has come).
-- KEYS[1] acct hash   KEYS[2] holds hash   KEYS[3] leases zset   KEYS[4] audit stream
-- ARGV[1] now ms  ARGV[2] who  ARGV[3] audit max entries  ARGV[4] max holds to reclaim
-- Returns {reclaimed, live holds left, latest expiry ms of the live holds or 0}
local acct, holds, leases, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
local reclaimed = 0
if redis.call('EXISTS', acct) == 1 then
  reclaimed = reclaim(acct, holds, leases, stream, ARGV[3], now, ARGV[2], tonumber(ARGV[4]),
                      num(redis.call('HGET', acct, 'reserved')))
end
local left = redis.call('ZCARD', leases)
local latest = 0
if left > 0 then latest = tonumber(redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')[2]) end
return {reclaimed, left, latest}
