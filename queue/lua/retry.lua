-- retry: re-queue a dead or failed job by hand, with a fresh count of attempts.
-- KEYS: 1 job hash, 2 sequence, 3 "done" set
-- ARGV: 1 key prefix, 2 id
-- Returns "queued", "not_found", or "is:<status>" when its status forbids it.
local jk = KEYS[1]
local cur = redis.call('HMGET', jk, 'status', 'queue', 'priority', 'rec')
local st, q = cur[1], cur[2]
if not st then return 'not_found' end
if st ~= 'dead' and st ~= 'failed' then return 'is:' .. st end
if not cur[4] then return 'not_found' end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local qk = ARGV[1] .. '{' .. q .. '}:'
redis.call('PERSIST', jk)
redis.call('ZREM', qk .. 'dead', ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('HDEL', jk, 'result', 'finished', 'cancel', 'worker', 'forgiven')
redis.call('HSET', jk, 'status', 'queued', 'attempt', 0, 'progress', 0, 'run_at', now,
  'updated', now)
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', qk .. 'ready', (9 - (tonumber(cur[3]) or 5)) * 1099511627776 + seq, ARGV[2])
redis.call('ZADD', qk .. 'marker', 0, 'w')
return 'queued'
