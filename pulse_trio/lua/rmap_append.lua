-- rmap append_values / append_unique_values. ARGV[4]: key, ARGV[5]: "1" to append only
-- items not already present (also deduplicating within the call), ARGV[6..]: items.
-- Publishes only when something was appended.
-- returns: the stored value after the call (JSON list), or nil when absent and nothing added
local key, unique = ARGV[4], ARGV[5] == '1'
local current = redis.call('HGET', hash, key)
local list = decode_list(current)
if list == nil then return not_a_list(key) end
local seen = {}
if unique then
  for _, item in ipairs(list) do seen[item] = true end
end
local added = 0
for i = 6, #ARGV do
  local item = ARGV[i]
  if not unique or not seen[item] then
    list[#list + 1] = item
    seen[item] = true
    added = added + 1
  end
end
if added == 0 then
  apply_ttl()
  return current
end
local encoded = cjson.encode(list)
redis.call('HSET', hash, key, encoded)
commit('set', key, encoded)
apply_ttl()
return encoded
