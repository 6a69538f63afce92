-- rmap set. ARGV[4]: key, ARGV[5]: value.
-- Always writes, bumps the revision and publishes (even when the value is unchanged).
-- returns: {existed (0|1), previous value or "", new revision}
local key, value = ARGV[4], ARGV[5]
local prev = redis.call('HGET', hash, key)
redis.call('HSET', hash, key, value)
local rev = commit('set', key, value)
apply_ttl()
if prev then return {1, prev, rev} end
return {0, '', rev}
