-- Keep the claim to send a chord body while publishing: extend it if this worker still holds
-- it, or take it again if it lapsed while the chord's data is still there.
-- KEYS: 1 .c (claim)  2 .s (size).  ARGV: 1 claim token  2 new expiry s.  Returns 1 if held.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
if not cur and redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]), 'NX') then
    return 1
  end
end
return 0
