-- Pool register: a node joins (or re-joins) the pool and registers its workers.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: node id; ARGV[2]: liveness ttl in ms; ARGV[3..]: worker ids of this node to
--          (re-)register (none for a client-only node or a node without workers)
-- returns: {'shutdown'} while a pool shutdown is in progress, else
--          {'ok', epoch, worker, node, worker, node, ...} (the membership after the change)
-- Atomicity: the node's deadline, its workers and the epoch change together, and every live
-- node is told the new membership in the same step.
if redis.call('EXISTS', K.shutdown) == 1 then
  return {'shutdown'}
end
local node, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
redis.call('ZADD', K.nodes, now + ttl, node)
redis.call('HSET', K.beats, node, now)
local changed = false
for i = 3, #ARGV do
  if redis.call('HGET', K.workers, ARGV[i]) ~= node then
    redis.call('HSET', K.workers, ARGV[i], node)
    changed = true
  end
end
if changed then
  broadcast_membership()
end
return membership('ok')
