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
redis.call('DEL', hash)
redis.call('HSET', hash, '=rev', rev, '=kind', kind)
redis.call('PUBLISH', channel, kind .. ':' .. rev)
apply_ttl()
return 1
