-- Pool dispatch: admit new jobs (a batch of concurrent dispatches of one node) and send
-- each start to the worker that routing chose.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: dispatching node; ARGV[2]: the epoch routing used; ARGV[3]: max queued jobs;
-- ARGV[4]: trim the dispatching node's stream below this id ('' = no);
-- ARGV[5..]: items of 6 fields: job key, payload, dispatch token, target worker ('' = no
--            worker known), the worker's node, '1' when that worker runs on the dispatching
--            node, which then hands the start to it directly (taken at once, no message)
-- returns: {'shutdown'} | {'stale', epoch, worker, node, ...} (routing used an old
--          membership: route again) | {'ok', result, ...} with one result per item:
--          'sent' | 'exists' | 'full' | 'local:<assignment token>:<created ms>'
-- Atomicity: per job, uniqueness of the key, the queue bound, the membership check, the job
-- record, its payload and the start message are one step: all happen or none.
if redis.call('EXISTS', K.shutdown) == 1 then
  return {'shutdown'}
end
local origin, max_queued = ARGV[1], tonumber(ARGV[3])
trim(origin, ARGV[4])
local stale = stale_reply(ARGV[2])
if stale then
  return stale
end
-- Every target is checked before anything is written: a stale answer part-way through the
-- batch would leave the items before it admitted, and the caller, routing the whole batch
-- again, would find them 'exists'.
for i = 5, #ARGV, 6 do
  local worker, wnode = ARGV[i + 3], ARGV[i + 4]
  if worker ~= '' and redis.call('HGET', K.workers, worker) ~= wnode then
    -- Only possible when the caller's membership disagrees with the epoch it sent.
    return membership('stale')
  end
end
local now = now_ms()
local out = {'ok'}
for i = 5, #ARGV, 6 do
  local key, payload, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local worker, wnode, here = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  if redis.call('HEXISTS', K.jobs, key) == 1 then
    out[#out + 1] = 'exists'
  elseif redis.call('SCARD', K.queued) >= max_queued then
    out[#out + 1] = 'full'
  else
    local m = {s = 'pending', w = worker, n = wnode, g = '', t = 0, d = token, r = origin,
               c = now, o = origin, q = 0, f = 0, e = ''}
    redis.call('HSET', K.payloads, key, payload)
    redis.call('SADD', K.queued, key)
    if worker == '' then
      m.s, m.n = 'unassigned', ''
      put_meta(key, m)
      redis.call('SADD', K.unassigned, key)
      out[#out + 1] = 'sent'
    else
      m.g = tostring(redis.call('INCR', K.seq))
      if here == '1' and wnode == origin then
        m.s, m.t = 'starting', 1
        put_meta(key, m)
        out[#out + 1] = 'local:' .. m.g .. ':' .. now
      else
        put_meta(key, m)
        send(wnode, 't', 's', 'k', key, 'w', worker, 'g', m.g, 'p', payload,
             'c', tostring(now), 'q', '0', 'o', origin, 'E', ARGV[2])
        out[#out + 1] = 'sent'
      end
    end
  end
end
return out
