-- identities_claim: give identities to an account, all or none (global index hash).
-- KEYS[1] identity index hash (identity -> account id)
-- ARGV[1] account id  ARGV[2..] identities
-- Returns {'ok', newly claimed...} | {'taken', identity, owner}
local index, owner = KEYS[1], ARGV[1]
for i = 2, #ARGV do
  local current = redis.call('HGET', index, ARGV[i])
  if current and current ~= owner then return {'taken', ARGV[i], current} end
end
local claimed = {'ok'}
for i = 2, #ARGV do
  if redis.call('HSETNX', index, ARGV[i], owner) == 1 then claimed[#claimed + 1] = ARGV[i] end
end
return claimed
