-- Pool shutdown: start a coordinated shutdown (every node stops every job of its workers).
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: the requesting node
-- returns: the ids of the nodes that must acknowledge (every live node)
-- Atomicity: after this step no dispatch is admitted and no node can join.
redis.call('SET', K.shutdown, ARGV[1])
redis.call('DEL', K.acks)
local nodes = redis.call('ZRANGE', K.nodes, 0, -1)
for _, node in ipairs(nodes) do
  redis.call('XADD', node_stream(node), '*', 't', 'q', 'o', ARGV[1])
end
return nodes
