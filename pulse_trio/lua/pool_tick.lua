-- Pool tick: open a ticker, claim its due tick for the calling node, or hand a claimed tick
-- back (its receiver closed before it was delivered).
-- KEYS[1]: the pool's jobs hash (see pool_prelude.lua); the tickers hash is derived from it
-- ARGV[1]: 'open', 'claim' or 'release'; ARGV[2]: ticker name; ARGV[3]: interval in ms;
-- for 'release': ARGV[4]: the due time (ms) of the tick handed back, ARGV[5]: its count
-- record: '<next tick ms> <interval ms>' then, for ticks handed back and not claimed again,
--         pairs '<due ms> <count>'
-- returns: for 'open': {when the next tick can be claimed (ms), now ms} (an entry with the
--          same interval is kept, otherwise the schedule starts one interval from now);
--          for 'claim': {ticks, when the next tick can be claimed (ms), now ms, due ms}:
--          ticks = 0 when no tick is due or another node claimed it; otherwise the number of
--          intervals the claimed tick stands for, the first of them due at `due`: a tick
--          handed back is claimed first, as it was; else the due tick with every interval
--          that elapsed since (1 when on time);
--          for 'release': 1 when the tick was handed back, 0 when the schedule was reset
--          meanwhile (another interval: its ticks are not this one's)
-- Atomicity: a due or handed-back tick is claimed by one caller only; the schedule advances
-- with it, and a tick handed back is claimed again exactly once.
local name, interval = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local raw = redis.call('HGET', K.tickers, name)
local f = {}
if raw then
  for v in string.gmatch(raw, '%S+') do
    f[#f + 1] = tonumber(v)
  end
end
local function save()
  redis.call('HSET', K.tickers, name, table.concat(f, ' '))
end
local function available()
  -- Handed-back ticks can be claimed at once; otherwise at the next due time.
  if #f > 2 then
    return now
  end
  return f[1]
end
local reset = f[1] == nil or f[2] ~= interval
if ARGV[1] == 'release' then
  if reset then
    return 0
  end
  local due, count = tonumber(ARGV[4]), tonumber(ARGV[5])
  if due + count * interval == f[1] then
    f[1] = due -- nobody claimed after it: the schedule resumes from it (counted with the rest)
  else
    f[#f + 1] = due
    f[#f + 1] = count
  end
  save()
  return 1
end
if reset then
  f = {now + interval, interval}
  save()
  if ARGV[1] == 'open' then
    return {f[1], now}
  end
  return {0, f[1], now, 0}
end
if ARGV[1] == 'open' then
  return {available(), now}
end
if #f > 2 then
  local due, count = f[3], f[4]
  table.remove(f, 3)
  table.remove(f, 3)
  save()
  return {count, available(), now, due}
end
if now < f[1] then
  return {0, f[1], now, 0}
end
local ticks = math.floor((now - f[1]) / interval) + 1
local due = f[1]
f[1] = f[1] + ticks * interval
save()
return {ticks, f[1], now, due}
