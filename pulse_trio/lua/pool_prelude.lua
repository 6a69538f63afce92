-- Pool prelude: helpers shared by every pool_*.lua script (put before each one's source).
-- KEYS[1]: the pool's jobs hash, pulse-trio:pool:{<pool>}:jobs. Every other key of the pool
--          is derived from it and carries the same hash tag, so it lives in the same Redis
--          Cluster slot: each pool script touches one slot only.
-- KEYS[2]: pulse-trio:pool:{<pool>}:guard, a key that never exists and that no script touches.
--          Declaring it makes Redis refuse the script (TRYAGAIN) for as long as the slot is
--          MIGRATING or IMPORTING: the keys a script derives are then never read or written on
--          a node that holds only part of them (the client retries until the migration ends).
-- Job records (jobs hash, job key -> JSON): s state (pending|starting|running|stopping|
-- unassigned|retry|failed), w worker, n the worker's node, g assignment token, t taken (0/1),
-- d dispatch token and r dispatcher node of a dispatch still waiting ('' once answered),
-- a the dispatch token whose successful start was answered,
-- c created (ms, Redis clock), o origin node, q requeued (0/1), f failed starts, e last error,
-- sd/sr stop token and stopping node.
local P = string.sub(KEYS[1], 1, -5)
local K = {
  jobs = KEYS[1], payloads = P .. 'payloads', nodes = P .. 'nodes', workers = P .. 'workers',
  epoch = P .. 'epoch', unassigned = P .. 'unassigned', retry = P .. 'retry',
  queued = P .. 'queued', seq = P .. 'seq', shutdown = P .. 'shutdown',
  acks = P .. 'shutdown-acks', tickers = P .. 'tickers', scheduled = P .. 'scheduled',
  beats = P .. 'beats',
}

local function node_stream(id)
  return P .. 'node:' .. id
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function get_meta(key)
  local raw = redis.call('HGET', K.jobs, key)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

local function put_meta(key, m)
  redis.call('HSET', K.jobs, key, cjson.encode(m))
end

local function node_alive(id)
  return id ~= '' and redis.call('ZSCORE', K.nodes, id) ~= false
end

-- Append a message to a live node's stream (a dead node's stream is not re-created).
local function send(node, ...)
  if node_alive(node) then
    redis.call('XADD', node_stream(node), '*', ...)
  end
end

-- The membership as a flat list: epoch, worker, node, worker, node, ...; after ``status``
-- when one is given (the reply {status, epoch, worker, node, ...}).
local function membership(status)
  local out = {status}
  out[#out + 1] = tostring(redis.call('GET', K.epoch) or '0')
  local flat = redis.call('HGETALL', K.workers)
  for i = 1, #flat do
    out[#out + 1] = flat[i]
  end
  return out
end

-- {'stale', epoch, worker, node, ...} when ``epoch`` (what the caller routed with) is not
-- the current one, else nil: the reply that makes the caller route again.
local function stale_reply(epoch)
  if tostring(redis.call('GET', K.epoch) or '0') == epoch then
    return nil
  end
  return membership('stale')
end

-- Bump the epoch and tell every live node the new membership.
local function broadcast_membership()
  redis.call('INCR', K.epoch)
  local list = membership()
  local encoded = table.concat(list, '\n')
  for _, node in ipairs(redis.call('ZRANGE', K.nodes, 0, -1)) do
    redis.call('XADD', node_stream(node), '*', 't', 'm', 'M', encoded)
  end
end

local function delete_job(key)
  redis.call('HDEL', K.jobs, key)
  redis.call('HDEL', K.payloads, key)
  redis.call('SREM', K.unassigned, key)
  redis.call('SREM', K.queued, key)
  redis.call('ZREM', K.retry, key)
end

-- A job loses its worker: a job being stopped is done (its stopper is answered), any other
-- job waits for placement.
local function unassign(key, m)
  if m.s == 'stopping' then
    delete_job(key)
    send(m.sr, 't', 'r', 'd', m.sd, 'o', '1', 'e', '')
    return
  end
  if m.s == 'retry' or m.s == 'failed' or m.s == 'unassigned' then
    return
  end
  if m.t == 1 or m.s == 'running' then
    m.q = 1
  end
  m.s, m.w, m.n, m.g, m.t = 'unassigned', '', '', '', 0
  put_meta(key, m)
  redis.call('SADD', K.unassigned, key)
  redis.call('SADD', K.queued, key)
end

-- Unassign every job whose worker is in the set `gone` (worker id -> true).
local function unassign_workers(gone)
  local flat = redis.call('HGETALL', K.jobs)
  for i = 1, #flat, 2 do
    local m = cjson.decode(flat[i + 1])
    if m.w ~= '' and gone[m.w] then
      unassign(flat[i], m)
    end
  end
end

-- Remove nodes whose deadline passed (Redis clock), their workers and streams; their jobs
-- become unassigned. Returns true if the membership changed.
local function reap(now)
  local dead = redis.call('ZRANGEBYSCORE', K.nodes, '-inf', '(' .. now)
  if #dead == 0 then
    return false
  end
  local dead_set = {}
  for _, node in ipairs(dead) do
    dead_set[node] = true
    redis.call('ZREM', K.nodes, node)
    redis.call('HDEL', K.beats, node)
    redis.call('DEL', node_stream(node))
  end
  local gone, any = {}, false
  local flat = redis.call('HGETALL', K.workers)
  for i = 1, #flat, 2 do
    if dead_set[flat[i + 1]] then
      gone[flat[i]] = true
      any = true
      redis.call('HDEL', K.workers, flat[i])
    end
  end
  unassign_workers(gone)
  if any then
    broadcast_membership()
  end
  return any
end

-- Trim this node's own stream below `minid` (entries it has read); '' = nothing to trim.
local function trim(node, minid)
  if minid ~= '' then
    redis.call('XTRIM', node_stream(node), 'MINID', minid)
  end
end
