-- Pop up to ARGV[1] messages and record each in the unacked hash and index in the same atomic
-- step, so no message is ever only in a consumer's memory (closes kombu's BRPOP→HSET window).
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] tq.dead, KEYS[4] tq.dead.seq,
-- KEYS[5..] list keys in pop order.  ARGV[1] count, ARGV[2..] queue name of each list key.
-- Envelopes that are not JSON objects with properties.delivery_tag and delivery_info go to
-- tq.dead as "<meta json>\n<original bytes>".
-- Returns a flat array: tag, queue, envelope, tag, queue, envelope ... (tag '' = dead-lettered).
local unacked, index, dead, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local count = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
local n = 0
for i = 5, #KEYS do
  local queue = ARGV[i - 3]
  while n < count do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    n = n + 1
    local reason = nil
    -- Fast path: kombu writes '"delivery_info": {"exchange": "…", "routing_key": "…"}' and
    -- '"delivery_tag": "…"'; read them with plain string matching (no JSON decode in Redis).
    -- Anything else takes the cjson path. The controller still parses every envelope fully.
    local tag = string.match(raw, '"delivery_tag": "([^"\\]+)"')
    local exch, rk = string.match(raw,
      '"delivery_info": {"exchange": "([^"\\]*)", "routing_key": "([^"\\]*)"')
    if not (tag and exch and string.sub(raw, 1, 1) == '{') then
      tag, exch, rk = nil, nil, nil
      local ok, env = pcall(cjson.decode, raw)
      if not ok then
        reason = 'envelope is not valid JSON'
      elseif type(env) ~= 'table' or env[1] ~= nil then
        reason = 'envelope is not a JSON object'
      elseif type(env['properties']) ~= 'table' then
        reason = 'envelope has no properties object'
      else
        local p = env['properties']
        tag = p['delivery_tag']
        local di = p['delivery_info']
        if type(di) == 'table' then
          exch = di['exchange']
          rk = di['routing_key']
        end
        if type(tag) ~= 'string' or tag == '' then
          reason = 'envelope has no properties.delivery_tag'
        elseif type(exch) ~= 'string' or type(rk) ~= 'string' then
          reason = 'envelope has no properties.delivery_info with exchange and routing_key'
        end
      end
    end
    if reason then
      local id = 'd' .. redis.call('INCR', seq)
      local meta = cjson.encode({id = id, reason = reason, queue = queue, time = now})
      redis.call('LPUSH', dead, meta .. '\n' .. raw)
      out[#out + 1] = ''
      out[#out + 1] = queue
      out[#out + 1] = id
    else
      redis.call('ZADD', index, now, tag)
      redis.call('HSET', unacked, tag,
        '[' .. raw .. ', ' .. cjson.encode(exch) .. ', ' .. cjson.encode(rk) .. ']')
      out[#out + 1] = tag
      out[#out + 1] = queue
      out[#out + 1] = raw
    end
  end
  if n >= count then break end
end
return out
