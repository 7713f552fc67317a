-- cancel: a queued or scheduled job is canceled at once; a running one is asked to stop
-- (its worker hears it on the cancel channel or at its next heartbeat).
-- KEYS: 1 job hash, 2 done
-- ARGV: 1 key prefix, 2 id, 3 "done" channel, 4 "cancel" channel
-- Returns "canceled", "cancel_requested", "not_found", or "is:<status>" when the status
-- forbids it (already terminal, or a cancel already requested is reported again).
local jk = KEYS[1]
local cur = redis.call('HMGET', jk, 'status', 'queue')
local st, q = cur[1], cur[2]
if not st then return 'not_found' end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if st == 'queued' or st == 'scheduled' then
  local qk = ARGV[1] .. '{' .. q .. '}:'
  redis.call('ZREM', qk .. 'ready', ARGV[2])
  redis.call('ZREM', qk .. 'scheduled', ARGV[2])
  redis.call('HSET', jk, 'status', 'canceled', 'finished', now, 'updated', now)
  redis.call('ZADD', KEYS[2], now, ARGV[2])
  redis.call('HINCRBY', qk .. 'stats', 'canceled', 1)
  redis.call('PUBLISH', ARGV[3], ARGV[2])
  return 'canceled'
elseif st == 'running' then
  if redis.call('HGET', jk, 'cancel') == '1' then return 'cancel_requested' end
  redis.call('HSET', jk, 'cancel', '1', 'updated', now)
  redis.call('PUBLISH', ARGV[4], ARGV[2])
  return 'cancel_requested'
end
return 'is:' .. st
