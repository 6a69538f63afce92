-- Sink reclaim: take over entries of the group that stayed unacknowledged too long, and
-- report how many times each was delivered (XAUTOCLAIM does not return delivery counts).
-- KEYS[1]: the stream key, pulse:stream:<name> (the only key, so it runs on Redis Cluster)
-- ARGV[1]: the consumer group (the sink's name)
-- ARGV[2]: the consumer that takes the entries over (this sink instance)
-- ARGV[3]: minimum idle time in milliseconds (the sink's ack grace period)
-- ARGV[4]: the XAUTOCLAIM start cursor ("0-0" for a full scan)
-- ARGV[5]: the maximum number of entries claimed by this call
-- returns: {next cursor, {{id, deliveries, {field, value, ...}}, ...}}; deliveries counts
--          this delivery (XAUTOCLAIM incremented it). Entries deleted from the stream while
--          pending (trimmed) are dropped from the pending list by Redis and not returned.
-- Atomicity: the claim and the count lookup run as one script, so no other instance can
-- claim or acknowledge an entry in between.
local key, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local reply = redis.call('XAUTOCLAIM', key, group, consumer, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local claimed = {}
for _, entry in ipairs(reply[2]) do
  -- Redis 6.2 reports an entry deleted from the stream as a nil element.
  if entry then
    local id = entry[1]
    local detail = redis.call('XPENDING', key, group, id, id, 1, consumer)
    local deliveries = 1
    if detail[1] then
      deliveries = detail[1][4]
    end
    claimed[#claimed + 1] = {id, deliveries, entry[2]}
  end
end
return {reply[1], claimed}
