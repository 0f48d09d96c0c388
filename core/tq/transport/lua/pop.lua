-- Pop up to ARGV[1] messages and record each in the unacked hash and index in the same atomic
-- step, so no message is ever only in a consumer's memory (closes kombu's BRPOP→HSET window).
-- KEYS[1] unacked, KEYS[2] unacked_index, KEYS[3] tq.dead, KEYS[4] tq.dead.seq,
-- KEYS[5..] list keys in pop order.  ARGV[1] count, ARGV[2..] queue name of each list key.
-- Envelopes that are not JSON objects with properties.delivery_tag and delivery_info go to
-- tq.dead as "<meta json>\n<original bytes>".
-- Returns a flat array: tag, queue, envelope, tag, queue, envelope ... (tag '' = dead-lettered).
--
-- Idempotent form (the consumer's): one more key, KEYS[#KEYS], the consumer's pop record
-- (tq.pop.<consumer id>), and two more arguments, ARGV[#ARGV - 1] a nonce per pop and
-- ARGV[#ARGV] the record's lifetime in ms (so #ARGV == #KEYS - 2). A pop that takes messages
-- stores "<nonce>\n[secs, micros, tag, queue, envelope length, ...]" there (one SET that
-- replaces the previous pop's record). A call whose nonce is already recorded pops nothing and
-- returns that pop's deliveries again, re-read from unacked (those still held under that pop's
-- score; acked or restored ones are left out). So a pop whose reply was lost (a socket timeout
-- on a frozen broker, a dropped connection) is asked for again with the same nonce: with
-- count 0 and no list keys, a call only answers (or, when the nonce is unknown, claims it, so
-- that the lost call, if the server runs it later, pops nothing).
local unacked, index, dead, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local count = tonumber(ARGV[1])
local last = #KEYS
local record, nonce, lifetime = nil, nil, nil
if #ARGV == #KEYS - 2 then
  record, nonce, lifetime = KEYS[#KEYS], ARGV[#ARGV - 1], ARGV[#ARGV]
  last = #KEYS - 1
  local prev = redis.call('GET', record)
  if prev and string.sub(prev, 1, #nonce + 1) == nonce .. '\n' then
    local ok, rec = pcall(cjson.decode, string.sub(prev, #nonce + 2))
    local out = {}
    if ok and type(rec) == 'table' then
      local at = tonumber(rec[1]) + tonumber(rec[2]) / 1000000
      for j = 3, #rec - 2, 3 do
        local tag, queue, size = rec[j], rec[j + 1], rec[j + 2]
        if tag == '' then
          out[#out + 1] = ''
          out[#out + 1] = queue
          out[#out + 1] = size
        else
          local score = redis.call('ZSCORE', index, tag)
          local entry = redis.call('HGET', unacked, tag)
          -- still ours: nobody restored and popped it again since (that would move its score)
          if score and entry and math.abs(tonumber(score) - at) < 0.001 then
            out[#out + 1] = tag
            out[#out + 1] = queue
            out[#out + 1] = string.sub(entry, 2, 1 + size)
          end
        end
      end
    end
    return out
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
local n = 0
local rec = record and {t[1], t[2]} or nil
for i = 5, last do
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
      if rec then
        rec[#rec + 1] = ''
        rec[#rec + 1] = queue
        rec[#rec + 1] = id
      end
    else
      redis.call('ZADD', index, now, tag)
      redis.call('HSET', unacked, tag,
        '[' .. raw .. ', ' .. cjson.encode(exch) .. ', ' .. cjson.encode(rk) .. ']')
      out[#out + 1] = tag
      out[#out + 1] = queue
      out[#out + 1] = raw
      if rec then
        rec[#rec + 1] = tag
        rec[#rec + 1] = queue
        rec[#rec + 1] = string.len(raw)
      end
    end
  end
  if n >= count then break end
end
-- An empty pop leaves the previous record alone (idle polls write nothing), except the
-- answer-only call (count 0), which claims its nonce.
if rec and (n > 0 or count == 0) then
  redis.call('SET', record, nonce .. '\n' .. cjson.encode(rec), 'PX', lifetime)
end
return out
