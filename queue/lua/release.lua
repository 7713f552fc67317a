-- release: hand a leased job back (worker shutting down); it runs again elsewhere and
-- the attempt does not count. A job whose cancel was requested ends canceled instead.
-- KEYS: 1 job hash, 2 working, 3 ready, 4 marker, 5 done, 6 queue stats
-- ARGV: 1 id, 2 token, 3 "done" channel
-- Returns 1, or 0 when the token is not the current one.
local cur = redis.call('HMGET', KEYS[1], 'token', 'status', 'priority', 'cancel')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], 'worker')
if cur[4] == '1' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished', now, 'updated', now)
  redis.call('ZADD', KEYS[5], now, ARGV[1])
  redis.call('HINCRBY', KEYS[6], 'canceled', 1)
  redis.call('PUBLISH', ARGV[3], ARGV[1])
  return 1
end
redis.call('HINCRBY', KEYS[1], 'attempt', -1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated', now, 'progress', 0, 'pmsg', '')
redis.call('ZADD', KEYS[3], (9 - (tonumber(cur[3]) or 5)) * 1099511627776, ARGV[1])
redis.call('ZADD', KEYS[4], 0, 'w')
return 1
