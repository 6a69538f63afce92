-- Pool release: a worker gives jobs back (it stopped them: rebalance, fencing recovery).
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: worker id; ARGV[2..]: pairs job key, assignment token ('' = any assignment)
-- returns: the number of jobs released (now unassigned, waiting for pool_place)
-- Atomicity: a job is released only by the worker that holds it.
local worker, count = ARGV[1], 0
for i = 2, #ARGV, 2 do
  local m = get_meta(ARGV[i])
  if m and m.w == worker and (ARGV[i + 1] == '' or m.g == ARGV[i + 1]) then
    unassign(ARGV[i], m)
    count = count + 1
  end
end
return count
