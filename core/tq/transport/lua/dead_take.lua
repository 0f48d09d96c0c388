-- Remove the dead letter whose id is ARGV[1] from KEYS[1] and return it (or false).
-- Entries are "<meta json>\n<original bytes>"; ids are matched in the meta part only.
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local needle = '"id":"' .. ARGV[1] .. '"'
for _, entry in ipairs(entries) do
  local nl = string.find(entry, '\n', 1, true)
  local meta = nl and string.sub(entry, 1, nl - 1) or entry
  if string.find(meta, needle, 1, true) then
    redis.call('LREM', KEYS[1], 1, entry)
    return entry
  end
end
return false
