-- Pool move: jobs a rebalance stopped on their old workers go to their new owners, in one step
-- per job (what pool_release then pool_place did, without the unassigned state in between).
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: the calling node; ARGV[2]: the epoch routing used; ARGV[3]: '1' when the call is
--          sent again (its reply was lost: the first call may have run);
-- ARGV[4..]: items of 5 fields: job key, old worker, its assignment token, new worker ('' =
--            none), the new worker's node (the calling node: it starts the job itself)
-- returns: {'stale', epoch, worker, node, ...} when routing used an old membership: every job
--          still held by its old worker was released (unassigned, as pool_release does) and
--          the caller places them; else {'ok', result, ...} with one result per item:
--          'gone' (the old worker no longer holds that assignment, or a stop_job was waiting
--          for it: it is removed and its caller answered), 'released' (no valid new worker:
--          unassigned, to be placed; also a job found unassigned), 'sent' (assigned, start
--          sent to the new worker's node),
--          'local:<assignment token>:<requeued 0/1>' (assigned to a worker of the calling
--          node and taken: the caller starts it; on a call sent again, also a job that the
--          first call moved there, found taken for that worker)
-- Atomicity: a job is moved only by the worker that holds it, and only with the current
-- membership, so one job is never sent to two workers.
local me, epoch, again = ARGV[1], ARGV[2], ARGV[3] == '1'
local stale = tostring(redis.call('GET', K.epoch) or '0') ~= epoch
local out = {'ok'}
-- The new workers' registrations and the nodes' liveness, read once per script.
local registered, alive = {}, {}
local seq = 0
if not stale then
  seq = redis.call('INCRBY', K.seq, (#ARGV - 3) / 5) - (#ARGV - 3) / 5
end
for i = 4, #ARGV, 5 do
  local key, old, token, worker, wnode = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
                                         ARGV[i + 4]
  local m = get_meta(key)
  local valid = false
  if not stale and worker ~= '' then
    if registered[worker] == nil then
      registered[worker] = redis.call('HGET', K.workers, worker) or ''
    end
    valid = registered[worker] == wnode
  end
  if not m or m.w ~= old or m.g ~= token then
    if m and m.s == 'unassigned' then
      out[#out + 1] = 'released'
    elseif again and m and m.s == 'starting' and m.w == worker and m.n == me and wnode == me then
      -- Moved here by the first call, whose reply was lost: start it, or nobody will (the
      -- worker acknowledges without a second start if it runs the job already).
      out[#out + 1] = 'local:' .. m.g .. ':' .. tostring(m.q)
    else
      out[#out + 1] = 'gone'
    end
  elseif not valid or m.s == 'stopping' then
    out[#out + 1] = m.s == 'stopping' and 'gone' or 'released'
    unassign(key, m)
  else
    if m.t == 1 or m.s == 'running' then
      m.q = 1
    end
    seq = seq + 1
    m.w, m.n, m.g = worker, wnode, tostring(seq)
    redis.call('SADD', K.queued, key)
    if wnode == me then
      m.s, m.t = 'starting', 1
      put_meta(key, m)
      out[#out + 1] = 'local:' .. m.g .. ':' .. tostring(m.q)
    else
      m.s, m.t = 'pending', 0
      put_meta(key, m)
      if alive[wnode] == nil then
        alive[wnode] = node_alive(wnode)
      end
      if alive[wnode] then
        redis.call('XADD', node_stream(wnode), '*', 't', 's', 'k', key, 'w', worker, 'g', m.g,
                   'p', redis.call('HGET', K.payloads, key) or '', 'c', tostring(m.c),
                   'q', tostring(m.q), 'o', m.o, 'E', epoch)
      end
      out[#out + 1] = 'sent'
    end
  end
end
if stale then
  return membership('stale')
end
return out
