-- Write what one process learned for the others. KEYS: 1 cooling, 2 disabled, 3 recovered.
-- ARGV: 1 kind (cool, disable, recover), 2 ms, 3 reason.
-- A cooling key is only ever lengthened (a shorter 429 wait does not cut a longer one). A
-- disable supersedes an earlier recovery; a recovery lifts the disable and leaves a mark for
-- ARGV[2] ms, so that every process sees that the disable was lifted, not merely expired.
if ARGV[1] == 'cool' then
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
  end
elseif ARGV[1] == 'disable' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  redis.call('DEL', KEYS[3])
elseif ARGV[1] == 'recover' then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
end
return 1
