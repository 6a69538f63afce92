-- Pool shutdown ack: a node has stopped every job of its workers.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: node id; ARGV[2..]: the keys of the jobs it stopped
-- returns: the nodes that acknowledged so far
-- Atomicity: the node's jobs and workers are removed with its acknowledgement.
local node = ARGV[1]
for i = 2, #ARGV do
  delete_job(ARGV[i])
end
local flat = redis.call('HGETALL', K.workers)
for i = 1, #flat, 2 do
  if flat[i + 1] == node then
    redis.call('HDEL', K.workers, flat[i])
  end
end
redis.call('SADD', K.acks, node)
return redis.call('SMEMBERS', K.acks)
