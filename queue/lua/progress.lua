-- progress: record progress of a running job, only for the current lease holder.
-- KEYS: 1 job hash
-- ARGV: 1 token, 2 percent (0-100), 3 message
-- Returns -1 (stale lease), 0, or 1 when a cancel was requested.
local cur = redis.call('HMGET', KEYS[1], 'token', 'status', 'cancel')
if cur[1] ~= ARGV[1] or cur[2] ~= 'running' then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'pmsg', ARGV[3], 'updated', now)
if cur[3] == '1' then return 1 end
return 0
