-- Pool withdraw: a dispatcher whose wait timed out withdraws its job unless it was taken.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: job key; ARGV[2]: dispatch token
-- returns: 'withdrawn' (removed: it will never start) | 'running' (it started) |
--          'taken' (a worker is starting it: wait for the answer) | 'gone' (no record of
--          this dispatch any more: its start failed or it was stopped)
-- Atomicity: pool_take and this script exclude each other, so a job is either withdrawn or
-- taken, never both.
local key, token = ARGV[1], ARGV[2]
local m = get_meta(key)
if m and m.a == token then
  -- Its start succeeded and was answered (the answer may have been lost on the way).
  return 'running'
end
if not m or m.d ~= token then
  return 'gone'
end
if m.s == 'running' then
  return 'running'
end
if m.t == 1 or m.s == 'starting' or m.s == 'stopping' then
  return 'taken'
end
delete_job(key)
return 'withdrawn'
