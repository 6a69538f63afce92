-- Shared prelude of every rmap_*.lua script (prepended when the script is loaded).
-- KEYS[1]: the map's hash, map:<name>:content (the only key, so scripts run on Redis Cluster)
-- ARGV[1]: the update channel, map:<name>:updates
-- ARGV[2]: TTL mode: "" (none), "abs" (set once, when the hash has none) or "slide" (refresh)
-- ARGV[3]: TTL in milliseconds (ignored when the mode is "")
-- ARGV[4..]: the operation's own arguments
-- Every mutating branch ends in commit(): bump =rev, record =kind and publish one message
-- carrying the new revision, all inside this one atomic script, so revisions are contiguous
-- and each one is published exactly once.
local hash = KEYS[1]
local channel = ARGV[1]
local ttl_mode = ARGV[2]
local ttl_ms = tonumber(ARGV[3])

-- 4-byte little-endian length prefix (goa.design/pulse wire format).
local function lp(s)
  return struct.pack('<I4', #s) .. s
end

local function commit(kind, key, value)
  local rev = tostring(redis.call('HINCRBY', hash, '=rev', 1))
  redis.call('HSET', hash, '=kind', kind)
  local msg
  if kind == 'set' then
    msg = 'set:' .. lp(key) .. lp(value) .. lp(rev)
  else
    msg = 'del:' .. lp(key) .. lp(rev)
  end
  redis.call('PUBLISH', channel, msg)
  return rev
end

-- Applied after every call, also calls that changed nothing (as goa.design/pulse does).
local function apply_ttl()
  if ttl_mode == 'abs' then
    if redis.call('PTTL', hash) == -1 then redis.call('PEXPIRE', hash, ttl_ms) end
  elseif ttl_mode == 'slide' then
    if redis.call('EXISTS', hash) == 1 then redis.call('PEXPIRE', hash, ttl_ms) end
  end
end

-- A stored list: a JSON array of strings; legacy values that are not JSON arrays are split
-- on commas (empty items dropped). Returns nil for JSON that is not an array of strings.
local function decode_list(v)
  if not v then return {} end
  local ok, decoded = pcall(cjson.decode, v)
  if ok and type(decoded) == 'table' then
    local n = 0
    for k, item in pairs(decoded) do
      if type(k) ~= 'number' or type(item) ~= 'string' then return nil end
      n = n + 1
    end
    if n ~= #decoded then return nil end
    return decoded
  end
  local list = {}
  for item in string.gmatch(v, '[^,]+') do list[#list + 1] = item end
  return list
end

local function not_a_list(key)
  return redis.error_reply('PULSE_NOT_A_LIST the value of key ' .. key ..
    ' is not a JSON list of strings')
end
