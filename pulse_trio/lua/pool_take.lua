-- Pool take: a node's workers take the starts they read, before calling their handlers.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: node id; ARGV[2]: trim the node's stream below this id ('' = no);
-- ARGV[3..]: triples job key, worker, assignment token
-- returns: one status per triple: 'ok' (taken: start it), 'dup' (this assignment was taken
--          before: a redelivery, do not start it again), 'stale' (withdrawn, stopped or
--          moved since: drop it)
-- Atomicity: a job is taken at most once per assignment, and a taken job can no longer be
-- withdrawn by its dispatcher (pool_withdraw).
trim(ARGV[1], ARGV[2])
local out = {}
for i = 3, #ARGV, 3 do
  local key, worker, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local m = get_meta(key)
  if not m or m.g ~= token or m.w ~= worker then
    out[#out + 1] = 'stale'
  elseif m.s == 'pending' then
    m.s, m.t = 'starting', 1
    put_meta(key, m)
    out[#out + 1] = 'ok'
  else
    out[#out + 1] = 'dup'
  end
end
return out
