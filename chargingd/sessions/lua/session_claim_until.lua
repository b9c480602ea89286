-- session_claim_until: take one due entry of a session index (deadlines, last seen) by
-- moving its score to a retry time; exactly one caller across all daemons gets 1
-- (sessions/store.py claim_until). Unlike ZREM, a claimer that dies leaves the entry
-- to be retried at ARGV[3].
-- KEYS[1] the index (a sorted set of "ACC\0SID" members)
-- ARGV[1] the member   ARGV[2] due ms (the score must be <= it)   ARGV[3] retry ms
-- Returns 1 when this caller moved it, 0 when it was not due (or already taken).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
