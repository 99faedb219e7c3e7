-- Give a lease back and/or grant the next, atomically, by Redis' own clock: the rule of
-- aoai_blaster_core::shared::LeaseLedger (see its docs), for every process at once.
-- KEYS: 1 minute zset (id -> end ms), 2 window zset (id -> end ms), 3 leases hash
--       (id -> "tokens requests granted_ms"), 4 sequence, 5 totals hash (t: tokens, rm:
--       requests in the minute, rw: requests in the window), 6 cooling key.
-- ARGV: 1 id to give back (0: none), 2 used tokens, 3 used requests, 4 last use ms after the ask,
--       5 ask (1) or not (0), 6 want tokens, 7 want requests, 8 at least tokens,
--       9 at least requests, 10 tpm, 11 rpm, 12 requests per window (-1: unlimited),
--       13 ttl ms, 14 minute span ms, 15 window span ms.
-- Returns {0} (nothing asked), {1, id, tokens, requests} (granted) or {2, wait ms}.
-- Cost: the records that ended since the last call, plus O(log n); only a refusal walks the
-- records, oldest first, until enough room would be free.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, mspan, wspan = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])

local function parse(rec)
  local tok, req, granted = string.match(rec, '^(%d+) (%d+) (%d+)$')
  return tonumber(tok), tonumber(req), tonumber(granted)
end

local function add(field, amount)
  if amount ~= 0 then
    redis.call('HINCRBY', KEYS[5], field, amount)
  end
end

-- Requests leave the window when it has passed for them; records leave when their minute has.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local rec = redis.call('HGET', KEYS[3], id)
  if rec then
    local _, req = parse(rec)
    add('rw', -req)
  end
  redis.call('ZREM', KEYS[2], id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local rec = redis.call('HGET', KEYS[3], id)
  if rec then
    local tok, req = parse(rec)
    add('t', -tok)
    add('rm', -req)
  end
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[1], id)
end

if ARGV[1] ~= '0' then
  local id = ARGV[1]
  local rec = redis.call('HGET', KEYS[3], id)
  if rec then
    local tok, req, granted = parse(rec)
    local used_t = math.min(tonumber(ARGV[2]), tok)
    local used_r = math.min(tonumber(ARGV[3]), req)
    local last = granted + math.min(tonumber(ARGV[4]), ttl)
    local mend = math.min(tonumber(redis.call('ZSCORE', KEYS[1], id)), last + mspan)
    local wscore = redis.call('ZSCORE', KEYS[2], id)
    -- The part no longer counted in the window: the unused rest, or all once it has passed.
    if wscore then
      local wend = math.min(tonumber(wscore), last + wspan)
      if (used_t == 0 and used_r == 0) or wend <= now then
        add('rw', -req)
        redis.call('ZREM', KEYS[2], id)
      else
        add('rw', used_r - req)
        redis.call('ZADD', KEYS[2], wend, id)
      end
    end
    if (used_t == 0 and used_r == 0) or mend <= now then
      add('t', -tok)
      add('rm', -req)
      redis.call('HDEL', KEYS[3], id)
      redis.call('ZREM', KEYS[1], id)
    else
      add('t', used_t - tok)
      add('rm', used_r - req)
      redis.call('HSET', KEYS[3], id, string.format('%d %d %d', used_t, used_r, granted))
      redis.call('ZADD', KEYS[1], mend, id)
    end
  end
end

if ARGV[5] ~= '1' then
  return {0}
end

local cooling = redis.call('PTTL', KEYS[6])
if cooling > 0 then
  return {2, cooling}
end

local totals = redis.call('HMGET', KEYS[5], 't', 'rm', 'rw')
local tokens = tonumber(totals[1]) or 0
local req_minute = tonumber(totals[2]) or 0
local req_window = tonumber(totals[3]) or 0

-- How long until records of `set` holding `excess` (tokens: 1, requests: 2) have ended.
local function freed_after(set, which, excess)
  local freed, start = 0, 0
  while true do
    local batch = redis.call('ZRANGE', set, start, start + 99, 'WITHSCORES')
    if #batch == 0 then
      return ttl + mspan
    end
    for i = 1, #batch, 2 do
      local rec = redis.call('HGET', KEYS[3], batch[i])
      if rec then
        local tok, req = parse(rec)
        freed = freed + (which == 1 and tok or req)
        if freed >= excess then
          return tonumber(batch[i + 1]) - now
        end
      end
    end
    start = start + 100
  end
end

local wait = 0
-- One side: returns the room granted on it.
local function side(limit, used, set, which, want, at_least)
  if limit < 0 then
    return want
  end
  local free = math.max(limit - used, 0)
  local need = math.min(at_least, limit)
  if free < need or (at_least > limit and used > 0) then
    local excess = math.max(used + need - limit, 1)
    wait = math.max(wait, freed_after(set, which, excess))
  end
  return math.max(math.min(want, free), at_least)
end

local want_r, least_r = tonumber(ARGV[7]), tonumber(ARGV[9])
local room_t = side(tonumber(ARGV[10]), tokens, KEYS[1], 1, tonumber(ARGV[6]), tonumber(ARGV[8]))
local room_r = side(tonumber(ARGV[11]), req_minute, KEYS[1], 2, want_r, least_r)
room_r = math.min(room_r, side(tonumber(ARGV[12]), req_window, KEYS[2], 2, want_r, least_r))
if wait > 0 then
  return {2, wait}
end

local id = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[3], id, string.format('%d %d %d', room_t, room_r, now))
redis.call('ZADD', KEYS[1], now + ttl + mspan, id)
redis.call('ZADD', KEYS[2], now + ttl + wspan, id)
add('t', room_t)
add('rm', room_r)
add('rw', room_r)
-- Every key outlives its longest record a little, then vanishes with an idle deployment.
local life = ttl + mspan + 1000
for i = 1, 5 do
  redis.call('PEXPIRE', KEYS[i], life)
end
return {1, id, room_t, room_r}
