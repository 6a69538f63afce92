-- Sink dead letter: move an entry that was delivered too often to the dead-letter stream
-- and acknowledge it, as one step.
-- KEYS[1]: the stream key, pulse:stream:<name>
-- KEYS[2]: the dead-letter stream key, pulse:stream:<dead letter name> (same hash slot as
--          KEYS[1] on Redis Cluster; the sink uses two commands otherwise)
-- ARGV[1]: the consumer group (the sink's name)
-- ARGV[2]: the entry id
-- ARGV[3..]: the dead-letter entry's fields and values, alternating
-- returns: the dead-letter entry's id, or false if the entry was no longer pending (another
--          instance acknowledged it first: nothing is written)
-- Atomicity: the acknowledgement and the XADD happen together or not at all, so an entry is
-- dead-lettered exactly once.
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 then
  return false
end
local fields = {}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
return redis.call('XADD', KEYS[2], '*', unpack(fields))
