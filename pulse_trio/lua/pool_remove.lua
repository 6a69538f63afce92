-- Pool remove: workers leave the pool (remove_worker), or a whole node leaves (close).
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: node id; ARGV[2]: '1' when the node itself leaves (its deadline and stream go);
-- ARGV[3..]: worker ids of this node that leave
-- returns: the number of jobs that became unassigned (for other workers to take)
-- Atomicity: the workers, their jobs' ownership and the epoch change together, and every
-- live node hears of the new membership in the same step.
local node = ARGV[1]
local gone, any = {}, false
for i = 3, #ARGV do
  if redis.call('HGET', K.workers, ARGV[i]) == node then
    redis.call('HDEL', K.workers, ARGV[i])
    gone[ARGV[i]] = true
    any = true
  end
end
local before = redis.call('SCARD', K.unassigned)
unassign_workers(gone)
if ARGV[2] == '1' then
  redis.call('ZREM', K.nodes, node)
  redis.call('HDEL', K.beats, node)
  redis.call('DEL', node_stream(node))
end
if any then
  broadcast_membership()
end
return redis.call('SCARD', K.unassigned) - before
