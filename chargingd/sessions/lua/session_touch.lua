-- session_touch: note an accounting packet on a session record (sessions/store.py).
-- KEYS[1] = {a:ACC}:r:SID        the session record (a msgpack map, sessions/record.py)
-- ARGV[1] = usage_s               cumulative usage reported by the packet
-- ARGV[2] = now_ms                when it was seen
-- ARGV[3] = answer_ms             answer time implied by the packet (0 = unknown)
-- ARGV[4] = slack_s               how far usage may run ahead of our clock since
--                                 authorize (gateway clock skew, Acct-Delay-Time)
-- ARGV[5] = nas_session_id        the gateway's own Acct-Session-Id ('' = not given)
-- ARGV[6] = call_origin           the leg's h323-call-origin ('' = not given)
-- ARGV[7] = client                the packet's client ('' = not checked)
-- ARGV[8] = answer_move_ms        the answer an Interim says (0 = none): a record
--                                 answered by its Start moves there, later only
--                                 (sessions/noting.py answer_moved: the same rule)
-- Returns {state, last_usage_s, the record after the update ('' unless live)};
-- usage never moves backwards (reordered packets), a closed record is not changed;
-- {'invalid', last_usage_s, ''}: more usage than time since authorize, nothing changed;
-- {'foreign', 0, ''}: another client's call of the same id (RFC 2866 §5.5: an
-- Acct-Session-Id is unique per NAS only), nothing changed.
local raw = redis.call('GET', KEYS[1])
if not raw then
  return {'missing', 0, ''}
end
local r = rec_unpack(raw)
if ARGV[7] and ARGV[7] ~= '' and r[$client] ~= ARGV[7] then
  return {'foreign', 0, ''}
end
local state = r[$state] or 'live'  -- left out while live (compact records)
local last = r[$last_usage_s] or 0
if state ~= 'live' then
  return {state, last, ''}
end
local usage = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if usage * 1000 > now - (r[$auth_ms] or 0) + tonumber(ARGV[4]) * 1000 then
  return {'invalid', last, ''}
end
local before = last
if usage > last then
  r[$last_usage_s] = usage
  last = usage
end
r[$last_seen_ms] = now
-- What a Cisco POD handler matches a Disconnect-Request on (the Access-Request had no
-- Acct-Session-Id of its own): noted once the accounting says it.
if ARGV[5] and ARGV[5] ~= '' then r[$nas_session_id] = ARGV[5] end
if ARGV[6] and ARGV[6] ~= '' then r[$call_origin] = ARGV[6] end
local answer = tonumber(ARGV[3])
local answered = r[$answer_ms] or 0
local move = tonumber(ARGV[8] or '0') or 0
if answer > 0 and answered == 0 then
  r[$answer_ms] = answer
elseif answered > 0 and move > answered and (usage > 0 or before == 0) then
  -- never later than the talk reported before now (chargingd's clock)
  move = math.min(move, now - usage * 1000)
  if move > answered then r[$answer_ms] = move end
end
raw = rec_pack(r)
redis.call('SET', KEYS[1], raw, 'KEEPTTL')
return {state, last, raw}
