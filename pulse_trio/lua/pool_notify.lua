-- Pool notify: send a notification to the worker that runs a job.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: job key; ARGV[2]: the notifying node; ARGV[3]: reply token; ARGV[4]: payload
-- returns: 'notfound' | 'later' (the job is between workers: try again shortly) |
--          'sent' (the owner answers on the notifying node's stream)
-- Atomicity: the message goes to the owner recorded at this instant; the owner's node reads
-- it after the job's start (same stream, in order).
local key = ARGV[1]
local m = get_meta(key)
if not m or m.s == 'failed' then
  return 'notfound'
end
if m.n == '' or m.s == 'stopping' then
  return 'later'
end
send(m.n, 't', 'n', 'k', key, 'w', m.w, 'g', m.g, 'd', ARGV[3], 'r', ARGV[2], 'p', ARGV[4])
return 'sent'
