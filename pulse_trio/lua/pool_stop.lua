-- Pool stop: ask the owner of a job to stop it, or remove a job that no worker runs.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: job key; ARGV[2]: the stopping node; ARGV[3]: stop token
-- returns: 'notfound' | 'removed' (no worker had started it: removed at once) |
--          'sent' (the owner will answer on the stopping node's stream) |
--          'busy' (another stop is under way: the caller polls until the job is gone)
-- Atomicity: the job cannot be taken, moved or started between the check and the removal.
local key, node, token = ARGV[1], ARGV[2], ARGV[3]
local m = get_meta(key)
if not m then
  return 'notfound'
end
if m.s == 'stopping' and m.t == 1 then
  -- A stop is under way: the caller retries until that one removed the job.
  return 'busy'
end
if (m.s == 'pending' and m.t == 0) or m.s == 'unassigned' or m.s == 'retry'
    or m.s == 'failed' then
  if m.d ~= '' then
    send(m.r, 't', 'r', 'd', m.d, 'o', '0', 'e', 'the job was stopped before it started')
  end
  delete_job(key)
  return 'removed'
end
m.s, m.sd, m.sr = 'stopping', token, node
put_meta(key, m)
send(m.n, 't', 'x', 'k', key, 'w', m.w, 'g', m.g, 'd', token, 'r', node)
return 'sent'
