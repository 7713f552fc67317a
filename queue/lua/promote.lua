-- promote: move due scheduled jobs (delayed or waiting to retry) to ready, in one step.
-- KEYS: 1 scheduled, 2 ready, 3 marker, 4 sequence
-- ARGV: 1 key prefix, 2 limit
-- Returns the number of jobs promoted.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local jk = ARGV[1] .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'status', 'priority')
  if cur[1] == 'scheduled' then
    local seq = redis.call('INCR', KEYS[4])
    redis.call('HSET', jk, 'status', 'queued', 'updated', now)
    redis.call('ZADD', KEYS[2], (9 - (tonumber(cur[2]) or 5)) * 1099511627776 + seq, id)
    n = n + 1
  end
end
if n > 0 then redis.call('ZADD', KEYS[3], 0, 'w') end
return n
