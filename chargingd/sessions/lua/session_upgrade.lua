-- session_upgrade: convert one session record of the hash format (before 6db408c) into
-- the msgpack record (sessions/record.py), atomically (sessions/upgrade.py).
-- KEYS[1] = {a:ACC}:s:SID    the old record: a hash of the fields by their full names
-- KEYS[2] = {a:ACC}:r:SID    the new record (same {a:ACC} slot)
-- ARGV[1] = a msgpack map: field name -> {code, 1 for an integer field else 0[, default]}
--           (a field at its default is left out, as the new code stores it; no default:
--           always stored)
-- ARGV[2] = '{a:ACC}:r:' (the new key's prefix, built by the caller from the hash's key)
-- Returns {'upgraded', state} converted, the old hash deleted, its expiry kept
--       | {'exists', state} a new record of that session exists already: it is kept,
--         the old hash deleted
--       | {'gone', ''} no old hash (another daemon converted it first)
--       | {'foreign', ''} not a session record (no state/account_id/session_id, or they
--         do not match the key): left alone
local t = redis.call('TYPE', KEYS[1])
if t.ok ~= 'hash' then return {'gone', ''} end
local flat = redis.call('HGETALL', KEYS[1])
local old = {}
for i = 1, #flat, 2 do old[flat[i]] = flat[i + 1] end
if not old['state'] or not old['account_id'] or not old['session_id'] then
  return {'foreign', ''}
end
if ARGV[2] .. old['session_id'] ~= KEYS[2]
   or ARGV[2] ~= '{a:' .. old['account_id'] .. '}:r:' then
  return {'foreign', ''}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[1])
  return {'exists', old['state']}
end
local spec = cmsgpack.unpack(ARGV[1])
local rec = {}
for name, value in pairs(old) do
  local s = spec[name]
  if s then
    local v = value
    if s[2] == 1 then v = tonumber(value) or value end
    if s[3] == nil or v ~= s[3] then rec[s[1]] = v end
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[2], cmsgpack.pack(rec), 'PX', ttl)
else
  redis.call('SET', KEYS[2], cmsgpack.pack(rec))
end
redis.call('DEL', KEYS[1])
return {'upgraded', old['state']}
