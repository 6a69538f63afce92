-- rmap inc. ARGV[4]: key, ARGV[5]: delta (integer).
-- HINCRBY fails before anything is written when the stored value is not an integer, so an
-- error leaves the map unchanged. Always publishes on success (even delta 0).
-- returns: the new value as a string
local key, delta = ARGV[4], ARGV[5]
local ok = pcall(redis.call, 'HINCRBY', hash, key, delta)
if not ok then
  return redis.error_reply('PULSE_NOT_AN_INTEGER the value of key ' .. key ..
    ' is not an integer (or the result overflows 64 bits)')
end
-- Read the value back as a string: Lua numbers are doubles and lose digits above 2^53.
local value = redis.call('HGET', hash, key)
commit('set', key, value)
apply_ttl()
return value
