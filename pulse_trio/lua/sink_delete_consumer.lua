-- Sink consumer deletion: delete a consumer from the group only if it has no pending
-- entries, so that XGROUP DELCONSUMER never discards entries nobody acknowledged.
-- KEYS[1]: the stream key, pulse:stream:<name> (the only key, so it runs on Redis Cluster)
-- ARGV[1]: the consumer group (the sink's name)
-- ARGV[2]: the consumer to delete
-- returns: 1 deleted; 0 kept because it still has pending entries; -1 no such stream or
--          group (nothing to delete)
-- Atomicity: the pending check and the deletion run as one script: no entry can be
-- delivered to the consumer between them.
local key, group, consumer = KEYS[1], ARGV[1], ARGV[2]
if redis.call('EXISTS', key) == 0 then
  return -1
end
local ok, pending = pcall(redis.call, 'XPENDING', key, group, '-', '+', 1, consumer)
if not ok then
  return -1
end
if #pending > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', key, group, consumer)
return 1
