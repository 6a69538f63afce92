-- Pool destroy: remove every key of the pool after a shutdown, keeping a short tombstone.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: how long the shutdown tombstone stays, in ms (nodes that missed the shutdown
--          learn of it from their next heartbeat instead of re-registering)
-- returns: the number of keys removed
-- Atomicity: the pool disappears in one step.
local removed = 0
for _, node in ipairs(redis.call('ZRANGE', K.nodes, 0, -1)) do
  removed = removed + redis.call('DEL', node_stream(node))
end
for name, key in pairs(K) do
  if name ~= 'shutdown' then
    removed = removed + redis.call('DEL', key)
  end
end
redis.call('PEXPIRE', K.shutdown, tonumber(ARGV[1]))
return removed
