-- rmap reset / destroy / test_and_reset. ARGV[4]: "reset" or "destroy"; ARGV[5..]: n keys
-- followed by their n expected values (test_and_reset; none = unconditional).
-- Clears every user field but keeps a tombstone {=rev, =kind} so that revisions keep
-- increasing across resets; publishes "<kind>:<rev>".
-- returns: 1 when reset, 0 when a test did not match
local kind = ARGV[4]
local n = (#ARGV - 4) / 2
for i = 1, n do
  local current = redis.call('HGET', hash, ARGV[4 + i])
  if not current or current ~= ARGV[4 + n + i] then
    apply_ttl()
    return 0
  end
end
local rev = tostring(redis.call('HINCRBY', hash, '=rev', 1))
-- Every field but =rev goes, then =kind is written: the same hash as a DEL and a new HSET,
-- but the key never stops existing inside the script. (On the source of a Redis Cluster slot
-- migration, Redis refuses a script's command on a key missing there: after a DEL, the HSET
-- would fail, leaving the map deleted without its tombstone or its message.)
local batch = {}
for _, field in ipairs(redis.call('HKEYS', hash)) do
  if field ~= '=rev' then
    batch[#batch + 1] = field
    if #batch == 1000 then
      redis.call('HDEL', hash, unpack(batch))
      batch = {}
    end
  end
end
if #batch > 0 then
  redis.call('HDEL', hash, unpack(batch))
end
redis.call('HSET', hash, '=kind', kind)
redis.call('PERSIST', hash) -- as a new hash: apply_ttl() sets an absolute TTL afresh
redis.call('PUBLISH', channel, kind .. ':' .. rev)
apply_ttl()
return 1
