-- Pool heartbeat: renew a node's liveness, reap dead nodes, release due retries.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: node id; ARGV[2]: liveness ttl in ms; ARGV[3]: the epoch the node knows;
-- ARGV[4]: trim this node's stream below this id ('' = no); ARGV[5]: '1' to reap dead nodes
-- ARGV[6]: the most unassigned keys to return
-- returns: {'shutdown'} | {'unknown'} (the node was declared dead: it must fence and
--          re-register) | {'ok', unassigned keys (list), membership (flat list, empty when
--          the node's epoch is current)}
-- Atomicity: renewal, reaping (by the Redis clock, the only clock compared) and the release
-- of due retries are one step.
if redis.call('EXISTS', K.shutdown) == 1 then
  return {'shutdown'}
end
local node, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
if redis.call('ZADD', K.nodes, 'XX', 'CH', now + ttl, node) == 0
    and redis.call('ZSCORE', K.nodes, node) == false then
  return {'unknown'}
end
-- When it last beat (read by pulse_trio.admin only: liveness is the deadline above).
redis.call('HSET', K.beats, node, now)
trim(node, ARGV[4])
if ARGV[5] == '1' then
  reap(now)
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', K.retry, '-inf', now)) do
    redis.call('ZREM', K.retry, key)
    local m = get_meta(key)
    if m and m.s == 'retry' then
      m.s = 'unassigned'
      put_meta(key, m)
      redis.call('SADD', K.unassigned, key)
      redis.call('SADD', K.queued, key)
    end
  end
end
local keys = redis.call('SRANDMEMBER', K.unassigned, tonumber(ARGV[6]))
local members = {}
if tostring(redis.call('GET', K.epoch) or '0') ~= ARGV[3] then
  members = membership()
end
return {'ok', keys, members}
