-- Sink reclaim lease: one instance of a sink at a time reclaims idle entries and deletes
-- stale consumers of one stream. The lease expires on the Redis server's clock (PX), so
-- instances on hosts with skewed clocks still agree.
-- KEYS[1]: the lease key, pulse:sink:<sink>:lease:<stream> (one per sink and stream)
-- ARGV[1]: the candidate holder (the consumer name of this sink instance)
-- ARGV[2]: lease duration in milliseconds
-- returns: 1 if the candidate holds the lease now (taken or renewed), 0 if another holds it
-- Atomicity: the read and the write run as one script, so two candidates never both win.
local key, holder, ttl = KEYS[1], ARGV[1], ARGV[2]
local current = redis.call('GET', key)
if current and current ~= holder then
  return 0
end
redis.call('SET', key, holder, 'PX', ttl)
return 1
