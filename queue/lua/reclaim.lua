-- reclaim: re-queue jobs whose lease expired (their worker died or stalled). A new token
-- fences the old holder out. Cancel requested: canceled. A job's first lost lease is
-- forgiven (as BullMQ's maxStalledCount 1): it runs again whatever its attempts, since its
-- worker may have died before starting it (a lost fetch reply leases jobs nobody runs);
-- "forgiven" on the record keeps that attempt out of the count (see finish.lua). After
-- that, attempts exhausted: dead (a job that kills its worker each time ends).
-- KEYS: 1 working, 2 ready, 3 marker, 4 dead, 5 done, 6 queue stats
-- ARGV: 1 key prefix, 2 limit, 3 "done" channel
-- Returns the number of jobs reclaimed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local err = {code = 'LEASE_EXPIRED', message = 'the worker lost its lease (killed or stalled)',
  retryable = true}
local FORGIVEN_MAX = 1
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local jk = ARGV[1] .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'status', 'attempt', 'max_attempts', 'priority', 'cancel',
    'history', 'forgiven')
  if cur[1] == 'running' then
    n = n + 1
    redis.call('HINCRBY', jk, 'token', 1)
    local hist = {}
    if cur[6] then
      local ok, h = pcall(cjson.decode, cur[6])
      if ok and type(h) == 'table' then hist = h end
    end
    hist[#hist + 1] = {attempt = tonumber(cur[2]) or 0, error = err, at = now}
    while #hist > 20 do table.remove(hist, 1) end
    redis.call('HSET', jk, 'history', cjson.encode(hist), 'updated', now)
    redis.call('HDEL', jk, 'worker')
    local final
    local forgiven = tonumber(cur[7]) or 0
    if cur[5] == '1' then
      final = 'canceled'
    elseif forgiven < FORGIVEN_MAX then
      redis.call('HSET', jk, 'forgiven', tostring(forgiven + 1))
    elseif (tonumber(cur[2]) or 0) - forgiven >= (tonumber(cur[3]) or 0) then
      final = 'dead'
      redis.call('HSET', jk, 'error', cjson.encode(err))
      redis.call('ZADD', KEYS[4], now, id)
    end
    if final then
      redis.call('HSET', jk, 'status', final, 'finished', now)
      redis.call('ZADD', KEYS[5], now, id)
      redis.call('HINCRBY', KEYS[6], final, 1)
      redis.call('PUBLISH', ARGV[3], id)
    else
      redis.call('HSET', jk, 'status', 'queued', 'progress', 0, 'pmsg', '')
      redis.call('ZADD', KEYS[2], (9 - (tonumber(cur[4]) or 5)) * 1099511627776, id)
      redis.call('ZADD', KEYS[3], 0, 'w')
    end
  end
end
return n
