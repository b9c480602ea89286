-- session_note: an accounting packet noted on a record this process holds, in Python
-- (sessions/noting.py: session_touch.lua's rules), written as it is while the record's
-- stored value is still the one it was noted on (compared byte for byte: any other
-- writer came first). A Start's note (sessions/accounting.py): one GET and one SET
-- instead of session_touch's decode and re-encode of the record (round 14b).
-- KEYS[1] = {a:ACC}:r:SID    the session record
-- ARGV[1] = the stored value the packet was noted on
-- ARGV[2] = the stored value with the packet noted
-- Returns 1 when written, 0 when another value is stored (nothing written).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
