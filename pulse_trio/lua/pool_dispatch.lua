-- Pool dispatch: admit a new job and send its start to the worker that routing chose.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: job key; ARGV[2]: payload; ARGV[3]: dispatch token; ARGV[4]: dispatching node;
-- ARGV[5]: the epoch routing used; ARGV[6]: target worker ('' = no worker known);
-- ARGV[7]: the target worker's node; ARGV[8]: max queued jobs; ARGV[9]: trim the dispatching
-- node's stream below this id ('' = no); ARGV[10]: '1' when the target worker runs on the
-- dispatching node, which then hands the start to it directly (taken at once, no message)
-- returns: {'ok'} | {'local', assignment token, created ms} | {'exists'} |
--          {'full', queued count} | {'shutdown'} |
--          {'stale', epoch, worker, node, ...} (routing used an old membership: route again)
-- Atomicity: uniqueness of the key, the queue bound, the membership check, the job record,
-- its payload and the start message are one step: either all happen or none.
if redis.call('EXISTS', K.shutdown) == 1 then
  return {'shutdown'}
end
local key, token, origin = ARGV[1], ARGV[3], ARGV[4]
trim(origin, ARGV[9])
if redis.call('HEXISTS', K.jobs, key) == 1 then
  return {'exists'}
end
local queued = redis.call('SCARD', K.queued)
if queued >= tonumber(ARGV[8]) then
  return {'full', queued}
end
local worker, wnode = ARGV[6], ARGV[7]
if tostring(redis.call('GET', K.epoch) or '0') ~= ARGV[5]
    or (worker ~= '' and redis.call('HGET', K.workers, worker) ~= wnode) then
  local out = {'stale'}
  for _, v in ipairs(membership()) do
    out[#out + 1] = v
  end
  return out
end
local now = now_ms()
local m = {s = 'pending', w = worker, n = wnode, g = '', t = 0, d = token, r = origin,
           c = now, o = origin, q = 0, f = 0, e = ''}
redis.call('HSET', K.payloads, key, ARGV[2])
redis.call('SADD', K.queued, key)
if worker == '' then
  m.s, m.n = 'unassigned', ''
  put_meta(key, m)
  redis.call('SADD', K.unassigned, key)
  return {'ok'}
end
m.g = tostring(redis.call('INCR', K.seq))
if ARGV[10] == '1' and wnode == origin then
  m.s, m.t = 'starting', 1
  put_meta(key, m)
  return {'local', m.g, now}
end
put_meta(key, m)
send(wnode, 't', 's', 'k', key, 'w', worker, 'g', m.g, 'p', ARGV[2], 'c', tostring(now),
     'q', '0', 'o', origin)
return {'ok'}
