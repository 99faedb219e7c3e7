-- Count use this process made while Redis did not see it (Redis was away, or lost its data),
-- without checking the limits. KEYS: as renew.lua's first five.
-- ARGV: 1 longest life ms (ttl + minute span), then per record: tokens, requests, ms left in the
-- minute span, ms left in the short window.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV, 4 do
  local tok, req = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local id = redis.call('INCR', KEYS[4])
  redis.call('HSET', KEYS[3], id, string.format('%d %d %d', tok, req, now))
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i + 2]), id)
  redis.call('HINCRBY', KEYS[5], 't', tok)
  redis.call('HINCRBY', KEYS[5], 'rm', req)
  if tonumber(ARGV[i + 3]) > 0 then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[i + 3]), id)
    redis.call('HINCRBY', KEYS[5], 'rw', req)
  end
end
local life = tonumber(ARGV[1]) + 1000
for i = 1, 5 do
  redis.call('PEXPIRE', KEYS[i], life)
end
return (#ARGV - 1) / 4
