-- After the body was sent: if this worker still holds the claim, drop the chord's data and
-- leave "done" in .c, so a late duplicate part neither rebuilds the chord nor sends it again.
-- KEYS: 1 .c  2 .j  3 .t  4 .s  5 .d.  ARGV: 1 claim token  2 "done" expiry s.
-- Returns 1 if cleaned up, 0 if the claim was lost.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
local ttl = tonumber(ARGV[2])
if ttl and ttl > 0 then
  redis.call('SET', KEYS[1], 'done', 'EX', ttl)
end
return 1
