-- Pool ack: outcomes of starts, stops, notifications and job-task failures, in one batch.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: most failed starts of a requeued job before it is recorded as failed;
-- ARGV[2]: first retry delay in ms (doubled per failure); ARGV[3]: longest retry delay in ms;
-- ARGV[4]: the acknowledging node: replies to its own callers are returned, not sent
-- ARGV[5..]: items of 7 fields: kind, job key, worker, assignment token, ok ('1'/'0'),
--            error text, reply (for 'x' and 'n': reply-token NUL reply-node, else '')
--   kind 's': a start returned (ok) or raised (error text)
--   kind 'x': a stop returned or raised: the job is removed either way
--   kind 'n': a notification was handled (only a reply is sent)
--   kind 'c': a running job-task failed after its start: retry or record as failed
-- returns: {statuses, local replies}: one status per item, 'ok', or 'stale' when the worker
--          no longer holds that assignment (it must stop the job locally: someone else owns
--          it now); local replies = {token, ok, error, ...} for the acknowledging node itself
-- Atomicity: each state change and the reply to the waiting caller happen together.
local max_attempts, base, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local me = ARGV[4]
local out, mine = {}, {}

-- Answer a caller: on its node's stream, or in the reply when it waits on this node.
local function answer(node, token, ok, err)
  if node == me then
    mine[#mine + 1] = token
    mine[#mine + 1] = ok
    mine[#mine + 1] = err
  else
    send(node, 't', 'r', 'd', token, 'o', ok, 'e', err)
  end
end

local function reply_to(spec, ok, err)
  if spec ~= '' then
    local sep = string.find(spec, '\0', 1, true)
    answer(string.sub(spec, sep + 1), string.sub(spec, 1, sep - 1), ok, err)
  end
end

local function failed_start(key, m, err)
  m.f, m.q = (m.f or 0) + 1, 1
  m.e = err
  m.w, m.n, m.g, m.t = '', '', '', 0
  if m.f >= max_attempts then
    m.s = 'failed'
    redis.call('SREM', K.queued, key)
  else
    m.s = 'retry'
    local delay = math.min(cap, base * (2 ^ (m.f - 1)))
    redis.call('ZADD', K.retry, now_ms() + delay, key)
  end
  put_meta(key, m)
end

for i = 5, #ARGV, 7 do
  local kind, key, worker, token = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local ok, err, spec = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local m = get_meta(key)
  local held = m ~= nil and m.g == token and m.w == worker
  if kind == 's' then
    if not held then
      out[#out + 1] = 'stale'
    elseif ok == '1' then
      if m.s == 'starting' then
        m.s = 'running'
      end
      redis.call('SREM', K.queued, key)
      if m.d ~= '' then
        answer(m.r, m.d, '1', '')
        -- Remember which dispatch was answered: if the answer is lost (its node was reaped,
        -- or this script's reply was), pool_withdraw still tells that dispatcher it started.
        m.a, m.d, m.r = m.d, '', ''
      end
      put_meta(key, m)
      out[#out + 1] = 'ok'
    else
      if m.d ~= '' or m.s == 'stopping' then
        -- The dispatcher still waits (or a stop is pending): report and forget the job.
        if m.d ~= '' then
          answer(m.r, m.d, '0', err)
        end
        if m.s == 'stopping' then
          answer(m.sr, m.sd, '1', '')
        end
        delete_job(key)
      else
        failed_start(key, m, err)
      end
      out[#out + 1] = 'ok'
    end
  elseif kind == 'x' then
    if held then
      delete_job(key)
    end
    reply_to(spec, ok, err)
    out[#out + 1] = held and 'ok' or 'stale'
  elseif kind == 'n' then
    reply_to(spec, ok, err)
    out[#out + 1] = 'ok'
  elseif kind == 'c' then
    if held and m.s == 'running' then
      failed_start(key, m, err)
      out[#out + 1] = 'ok'
    else
      out[#out + 1] = 'stale'
    end
  else
    out[#out + 1] = 'stale'
  end
end
return {out, mine}
