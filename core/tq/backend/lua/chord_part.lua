-- Record one finished chord header part (Celery 5.7 Redis layout) and, when it is the last
-- one, take the claim to send the body -- all in one atomic step.
-- KEYS: 1 .j (ZSET of parts, or LIST when unordered)  2 .t (size adjustment)  3 .s (size)
--       4 .d (SET of "<tid>:<index>" already recorded)  5 the group key  6 .c (claim)
-- ARGV: 1 task id  2 encoded part  3 "1" ordered / "0"  4 group index (score; "+inf")
--       5 chord expiry s (0: none)  6 group key expiry s  7 claim expiry s  8 claim token
-- Returns {ready count, size adjustment or false, size or false, 1 if claimed else 0};
-- {-1, 0, 0, 0} when the chord already finished (.c == "done").
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local ordered = ARGV[3] == '1'
local chord_ttl, group_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])

if redis.call('GET', ckey) == 'done' then
  return {-1, 0, 0, 0}
end

-- A part counts once, even if its task ran twice (redelivery) with another result.
local seen = ARGV[1] .. ':' .. ARGV[4]
if redis.call('SISMEMBER', dkey, seen) == 0 then
  if ordered then
    redis.call('ZADD', jkey, ARGV[4], ARGV[2])
  else
    redis.call('RPUSH', jkey, ARGV[2])
  end
  redis.call('SADD', dkey, seen)
end

local count
if ordered then
  count = redis.call('ZCOUNT', jkey, '-inf', '+inf')
else
  count = redis.call('LLEN', jkey)
end

if chord_ttl > 0 then
  redis.call('EXPIRE', jkey, chord_ttl)
  redis.call('EXPIRE', tkey, chord_ttl)
  redis.call('EXPIRE', skey, chord_ttl)
  redis.call('EXPIRE', dkey, chord_ttl)
  if group_ttl > 0 then
    redis.call('EXPIRE', gkey, group_ttl)
  end
end

local adjust = redis.call('GET', tkey)
local size = redis.call('GET', skey)
local claimed = 0
if size and count == tonumber(size) + tonumber(adjust or 0) then
  if redis.call('SET', ckey, ARGV[8], 'NX', 'EX', tonumber(ARGV[7])) then
    claimed = 1
  end
end
return {count, adjust, size, claimed}
