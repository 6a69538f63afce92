-- rmap delete / test_and_delete. ARGV[4]: key, ARGV[5]: "1" to delete only when the value
-- equals ARGV[6].
-- Publishes only when a field was deleted (deleting an absent key changes nothing).
-- returns: the value found (nil when absent)
local key, conditional, test = ARGV[4], ARGV[5] == '1', ARGV[6]
local current = redis.call('HGET', hash, key)
if current and (not conditional or current == test) then
  -- commit() first: =rev keeps the hash from vanishing inside the script (see rmap_reset.lua)
  commit('del', key)
  redis.call('HDEL', hash, key)
end
apply_ttl()
return current
