-- Pool tick: open a ticker, or claim its due tick for the calling node.
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua); the tickers hash is derived from it
-- ARGV[1]: 'open' or 'claim'; ARGV[2]: ticker name; ARGV[3]: interval in ms
-- returns: for 'open': {next tick ms, now ms} (an entry with the same interval is kept,
--          otherwise the schedule starts one interval from now);
--          for 'claim': {ticks, next tick ms, now ms}: ticks = 0 when the tick is not due or
--          another node claimed it; otherwise the number of intervals that elapsed since the
--          due tick (1 when on time), all of them delivered to this caller at once
-- Atomicity: a due tick is claimed by one caller only; the schedule advances with it.
local name, interval = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local raw = redis.call('HGET', K.tickers, name)
local next_ms, stored_interval = nil, nil
if raw then
  local sep = string.find(raw, ' ', 1, true)
  next_ms, stored_interval = tonumber(string.sub(raw, 1, sep - 1)), tonumber(string.sub(raw, sep + 1))
end
if ARGV[1] == 'open' then
  if next_ms == nil or stored_interval ~= interval then
    next_ms = now + interval
    redis.call('HSET', K.tickers, name, next_ms .. ' ' .. interval)
  end
  return {next_ms, now}
end
if next_ms == nil or stored_interval ~= interval then
  next_ms = now + interval
  redis.call('HSET', K.tickers, name, next_ms .. ' ' .. interval)
  return {0, next_ms, now}
end
if now < next_ms then
  return {0, next_ms, now}
end
local ticks = math.floor((now - next_ms) / interval) + 1
next_ms = next_ms + ticks * interval
redis.call('HSET', K.tickers, name, next_ms .. ' ' .. interval)
return {ticks, next_ms, now}
