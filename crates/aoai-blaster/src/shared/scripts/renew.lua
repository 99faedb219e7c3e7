-- Give a lease back and/or grant the next, atomically, by Redis' own clock: the rule of
-- aoai_blaster_core::shared::LeaseLedger (see its docs), for every process at once.
-- KEYS: 1 minute zset (id -> end ms), 2 window zset (id -> end ms), 3 leases hash
--       (id -> "tokens requests granted_ms"), 4 sequence, 5 cooling key.
-- ARGV: 1 id to give back (0: none), 2 used tokens, 3 used requests, 4 last use ms after the ask,
--       5 ask (1) or not (0), 6 want tokens, 7 want requests, 8 at least tokens,
--       9 at least requests, 10 tpm, 11 rpm, 12 requests per window (-1: unlimited),
--       13 ttl ms, 14 minute span ms, 15 window span ms.
-- Returns {0} (nothing asked), {1, id, tokens, requests} (granted) or {2, wait ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, mspan, wspan = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])

local function parse(rec)
  local tok, req, granted = string.match(rec, '^(%d+) (%d+) (%d+)$')
  return tonumber(tok), tonumber(req), tonumber(granted)
end

local function forget(id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end

-- Records whose minute has passed are gone; requests leave the window when it has passed.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  forget(id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)

if ARGV[1] ~= '0' then
  local id = ARGV[1]
  local rec = redis.call('HGET', KEYS[3], id)
  if rec then
    local tok, req, granted = parse(rec)
    local used_t, used_r = tonumber(ARGV[2]), tonumber(ARGV[3])
    if used_t == 0 and used_r == 0 then
      forget(id)
    else
      local last = granted + math.min(tonumber(ARGV[4]), ttl)
      local mend = math.min(tonumber(redis.call('ZSCORE', KEYS[1], id)), last + mspan)
      if mend <= now then
        forget(id)
      else
        redis.call('HSET', KEYS[3], id,
          string.format('%d %d %d', math.min(used_t, tok), math.min(used_r, req), granted))
        redis.call('ZADD', KEYS[1], mend, id)
        local wscore = redis.call('ZSCORE', KEYS[2], id)
        if wscore then
          local wend = math.min(tonumber(wscore), last + wspan)
          if wend <= now then
            redis.call('ZREM', KEYS[2], id)
          else
            redis.call('ZADD', KEYS[2], wend, id)
          end
        end
      end
    end
  end
end

if ARGV[5] ~= '1' then
  return {0}
end

local cooling = redis.call('PTTL', KEYS[5])
if cooling > 0 then
  return {2, cooling}
end

-- What the live leases add up to, and when each ends (the sets are sorted by end).
local amounts = {}
local minute_t, minute_r, window_r = {}, {}, {}
local tokens, req_minute, req_window = 0, 0, 0
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #live, 2 do
  local rec = redis.call('HGET', KEYS[3], live[i])
  if rec then
    local tok, req = parse(rec)
    local mend = tonumber(live[i + 1])
    amounts[live[i]] = req
    tokens = tokens + tok
    req_minute = req_minute + req
    minute_t[#minute_t + 1] = {mend, tok}
    minute_r[#minute_r + 1] = {mend, req}
  end
end
local in_window = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #in_window, 2 do
  local req = amounts[in_window[i]]
  if req then
    req_window = req_window + req
    window_r[#window_r + 1] = {tonumber(in_window[i + 1]), req}
  end
end

-- How long until records holding `excess` have ended.
local function freed_after(ends, excess)
  local freed = 0
  for _, e in ipairs(ends) do
    if e[2] > 0 then
      freed = freed + e[2]
      if freed >= excess then
        return e[1] - now
      end
    end
  end
  return ttl + mspan
end

local wait = 0
-- One side: returns the room granted on it.
local function side(limit, used, ends, want, at_least)
  if limit < 0 then
    return want
  end
  local free = math.max(limit - used, 0)
  local need = math.min(at_least, limit)
  if free < need or (at_least > limit and used > 0) then
    local excess = math.max(used + need - limit, 1)
    wait = math.max(wait, freed_after(ends, excess))
  end
  return math.max(math.min(want, free), at_least)
end

local room_t = side(tonumber(ARGV[10]), tokens, minute_t, tonumber(ARGV[6]), tonumber(ARGV[8]))
local room_r = side(tonumber(ARGV[11]), req_minute, minute_r, tonumber(ARGV[7]), tonumber(ARGV[9]))
room_r = math.min(room_r,
  side(tonumber(ARGV[12]), req_window, window_r, tonumber(ARGV[7]), tonumber(ARGV[9])))
if wait > 0 then
  return {2, wait}
end

local id = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[3], id, string.format('%d %d %d', room_t, room_r, now))
redis.call('ZADD', KEYS[1], now + ttl + mspan, id)
redis.call('ZADD', KEYS[2], now + ttl + wspan, id)
-- Every key outlives its longest record a little, then vanishes with an idle deployment.
local life = ttl + mspan + 1000
for i = 1, 4 do
  redis.call('PEXPIRE', KEYS[i], life)
end
return {1, id, room_t, room_r}
