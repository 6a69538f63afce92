-- Sink clock: the Redis server's time, the one clock every sink instance agrees on.
-- (coredis's TIME callback drops the sub-millisecond part and misreads the microseconds.)
-- KEYS: none
-- ARGV: none
-- returns: {seconds, microseconds} as Redis TIME reports them
return redis.call('TIME')
