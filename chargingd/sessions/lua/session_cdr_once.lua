-- session_cdr_once: XADD a CDR once, however often the same bytes are sent
-- (sessions/store.py append_cdr: the close's CDR on Redis Cluster, where the stream
-- lives on another node than the call's record, so the XADD and the closed mark are
-- two steps). The client sends a command again after a timeout or a dropped
-- connection; when the first send ran on a master that died after replicating it, a
-- plain XADD would add the CDR a second time on the promoted replica. The marker and
-- the entry are written by this one script, so they replicate together: a replica has
-- both or neither.
-- KEYS[1] the CDR stream   KEYS[2] {cdr:stream}:once:DIGEST (same slot as KEYS[1])
-- ARGV[1] the packed CDR   ARGV[2] how long the marker is kept (s)
-- Returns the entry id: the first send's when the marker is there.
local done = redis.call('GET', KEYS[2])
if done then
  return done
end
local id = redis.call('XADD', KEYS[1], '*', 'cdr', ARGV[1])
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return id
