-- Store a result meta and publish it on the channel of the same name.
-- Never overwrite SUCCESS (as Celery), and never replace a final state (FAILURE, REVOKED) with
-- one that is not final: a stale RETRY or STARTED written late must not hide the outcome.
-- KEYS[1] meta key. ARGV[1] meta JSON, ARGV[2] expiry seconds (0 = no expiry).
-- Returns 1 if written, 0 if refused.
local function status_of(text)
  local s = string.match(string.sub(text, 1, 64), '"status": ?"(%u+)"')
  if s then return s end
  local ok, meta = pcall(cjson.decode, text)
  if ok and type(meta) == 'table' and type(meta['status']) == 'string' then
    return meta['status']
  end
  return nil
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local old = status_of(cur)
  if old == 'SUCCESS' then
    return 0
  end
  if old == 'FAILURE' or old == 'REVOKED' then
    local new = status_of(ARGV[1])
    if new ~= 'SUCCESS' and new ~= 'FAILURE' and new ~= 'REVOKED' then
      return 0
    end
  end
end
local ttl = tonumber(ARGV[2])
if ttl and ttl > 0 then
  redis.call('SETEX', KEYS[1], ttl, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
