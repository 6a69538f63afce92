-- Stream add: append entries with XADD and apply the stream's TTL, in one atomic script.
-- KEYS[1]: the stream key, pulse:stream:<name> (the only key, so it runs on Redis Cluster)
-- ARGV[1]: MAXLEN threshold for approximate trimming ("0" = no trimming)
-- ARGV[2]: "1" = NOMKSTREAM (never create a missing stream), "0" otherwise
-- ARGV[3]: TTL mode: "" (none), "abs" (PEXPIRE NX: set once, when the key has none) or
--          "slide" (PEXPIRE: refreshed by every add)
-- ARGV[4]: TTL in milliseconds (ignored when the mode is "")
-- ARGV[5..]: the entries, three values each: event name, payload, topic ("" = no topic)
-- returns: the new entry ids, in order; an element is false (nil reply) when NOMKSTREAM
--          found no stream
-- Atomicity: the entries and the TTL are written by one script, so no client ever sees the
-- key without its TTL, and a lost connection cannot separate the two.
local key = KEYS[1]
local maxlen = ARGV[1]
local nomkstream = ARGV[2] == '1'
local ttl_mode = ARGV[3]
local ttl_ms = ARGV[4]

local ids = {}
local added = false
for i = 5, #ARGV, 3 do
  local args = {'XADD', key}
  if nomkstream then table.insert(args, 'NOMKSTREAM') end
  if maxlen ~= '0' then
    table.insert(args, 'MAXLEN'); table.insert(args, '~'); table.insert(args, maxlen)
  end
  table.insert(args, '*')
  table.insert(args, 'n'); table.insert(args, ARGV[i])
  table.insert(args, 'p'); table.insert(args, ARGV[i + 1])
  if ARGV[i + 2] ~= '' then
    table.insert(args, 't'); table.insert(args, ARGV[i + 2])
  end
  local id = redis.call(unpack(args))
  if id then added = true end
  table.insert(ids, id)
end

if added then
  if ttl_mode == 'abs' then
    redis.call('PEXPIRE', key, ttl_ms, 'NX')
  elseif ttl_mode == 'slide' then
    redis.call('PEXPIRE', key, ttl_ms)
  end
end
return ids
