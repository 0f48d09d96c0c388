-- Extend the lease of held deliveries: move their unacked_index score to the server's now
-- (or to ARGV[1] seconds ahead of it), only for tags still present (ZADD XX).
-- kombu's sweep reads only the score, so this stays wire-compatible (RELIABILITY.md T15/T16).
-- KEYS[1] unacked_index; ARGV[1] offset seconds; ARGV[2..] tags.  Returns how many were renewed.
local t = redis.call('TIME')
local score = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', score, ARGV[i])
end
return n
