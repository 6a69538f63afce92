-- rmap remove_values. ARGV[4]: key, ARGV[5..]: items; every occurrence of each is removed.
-- Publishes only when something was removed; removing the last item deletes the key (a
-- "del" message).
-- returns: {stored value after the call or nil, removed (0|1)}
local key = ARGV[4]
local current = redis.call('HGET', hash, key)
if not current or #ARGV < 5 then
  apply_ttl()
  return {current, 0}
end
local list = decode_list(current)
if list == nil then return not_a_list(key) end
local drop = {}
for i = 5, #ARGV do drop[ARGV[i]] = true end
local kept = {}
for _, item in ipairs(list) do
  if not drop[item] then kept[#kept + 1] = item end
end
if #kept == #list then
  apply_ttl()
  return {current, 0}
end
if #kept == 0 then
  -- commit() first: =rev keeps the hash from vanishing inside the script (see rmap_reset.lua)
  commit('del', key)
  redis.call('HDEL', hash, key)
  apply_ttl()
  return {false, 1}
end
local encoded = cjson.encode(kept)
redis.call('HSET', hash, key, encoded)
commit('set', key, encoded)
apply_ttl()
return {encoded, 1}
