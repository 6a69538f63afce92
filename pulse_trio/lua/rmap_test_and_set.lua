-- rmap test_and_set. ARGV[4]: key, ARGV[5]: expected value, ARGV[6]: new value.
-- Swaps (and publishes) only when the current value equals the expected one; an absent key
-- never matches.
-- returns: the value found (nil when absent)
local key, test, value = ARGV[4], ARGV[5], ARGV[6]
local current = redis.call('HGET', hash, key)
if current and current == test then
  redis.call('HSET', hash, key, value)
  commit('set', key, value)
end
apply_ttl()
return current
