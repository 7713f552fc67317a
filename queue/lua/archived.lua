-- archived: after terminal jobs were written to PostgreSQL, drop them from the "done"
-- set and let them expire from Redis. A job that changed since it was read stays (or,
-- if no longer terminal, leaves the set until it ends again).
-- KEYS: 1 done
-- ARGV: 1 key prefix, 2 retention ms, 3 failed/dead retention ms, then pairs (id, updated)
-- Returns the number of jobs set to expire.
local n = 0
for i = 4, #ARGV - 1, 2 do
  local id = ARGV[i]
  local jk = ARGV[1] .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'status', 'updated', 'started', 'finished', 'created')
  local st = cur[1]
  -- the last update: the latest of the four (as queue/client.c reads it)
  local updated = math.max(tonumber(cur[2]) or 0, tonumber(cur[3]) or 0, tonumber(cur[4]) or 0,
    tonumber(cur[5]) or 0)
  if not st then
    redis.call('ZREM', KEYS[1], id)
  elseif st == 'succeeded' or st == 'canceled' or st == 'failed' or st == 'dead' then
    if updated == tonumber(ARGV[i + 1]) then
      redis.call('ZREM', KEYS[1], id)
      local ttl = ARGV[2]
      if st == 'failed' or st == 'dead' then ttl = ARGV[3] end
      redis.call('PEXPIRE', jk, ttl)
      n = n + 1
    end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return n
