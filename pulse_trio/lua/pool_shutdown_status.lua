-- Pool shutdown status: which nodes still have to acknowledge a shutdown.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1..]: the nodes the shutdown waits for
-- returns: the nodes of ARGV that neither acknowledged nor are dead (deadline passed on the
--          Redis clock)
-- Atomicity: acknowledgements and deadlines are read at one instant.
local now = now_ms()
local out = {}
for i = 1, #ARGV do
  local node = ARGV[i]
  if redis.call('SISMEMBER', K.acks, node) == 0 then
    local deadline = redis.call('ZSCORE', K.nodes, node)
    if deadline and tonumber(deadline) >= now then
      out[#out + 1] = node
    end
  end
end
return out
