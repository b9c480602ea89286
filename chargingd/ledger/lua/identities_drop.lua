-- identities_drop: remove identities from the index, only those the account still owns.
-- KEYS[1] identity index hash   ARGV[1] account id  ARGV[2..] identities
-- Returns how many were removed.
local index, owner, removed = KEYS[1], ARGV[1], 0
for i = 2, #ARGV do
  if redis.call('HGET', index, ARGV[i]) == owner then
    removed = removed + redis.call('HDEL', index, ARGV[i])
  end
end
return removed
