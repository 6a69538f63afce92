-- Pool place: assign unassigned jobs to the workers routing chose and send their starts.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua)
-- ARGV[1]: the epoch routing used; ARGV[2..]: triples job key, worker, worker's node
-- returns: {'ok', placed count} | {'stale', epoch, worker, node, ...} (route again)
-- Atomicity: only jobs still unassigned are placed, each by exactly one caller, and only
-- with the current membership, so concurrent placers never send one job twice.
local stale = stale_reply(ARGV[1])
if stale then
  return stale
end
local placed = 0
for i = 2, #ARGV, 3 do
  local key, worker, wnode = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local m = get_meta(key)
  if m and m.s == 'unassigned' and redis.call('HGET', K.workers, worker) == wnode then
    m.s, m.w, m.n, m.t = 'pending', worker, wnode, 0
    m.g = tostring(redis.call('INCR', K.seq))
    put_meta(key, m)
    redis.call('SREM', K.unassigned, key)
    send(wnode, 't', 's', 'k', key, 'w', worker, 'g', m.g,
         'p', redis.call('HGET', K.payloads, key) or '', 'c', tostring(m.c),
         'q', tostring(m.q), 'o', m.o, 'E', ARGV[1])
    placed = placed + 1
  elseif m == nil then
    redis.call('SREM', K.unassigned, key)
  end
end
return {'ok', placed}
