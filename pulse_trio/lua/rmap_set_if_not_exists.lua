-- rmap set_if_not_exists. ARGV[4]: key, ARGV[5]: value.
-- Writes (and publishes) only when the field is absent.
-- returns: 1 if written, else 0
local key, value = ARGV[4], ARGV[5]
local written = 0
if redis.call('HEXISTS', hash, key) == 0 then
  redis.call('HSET', hash, key, value)
  commit('set', key, value)
  written = 1
end
apply_ttl()
return written
