-- heartbeat: extend the leases a worker holds in one queue.
-- KEYS: 1 working
-- ARGV: 1 key prefix, 2 lease ms, then pairs of (id, token)
-- Returns {lost ids, ids whose cancel was requested}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[2])
local lost, cancels = {}, {}
for i = 3, #ARGV - 1, 2 do
  local id = ARGV[i]
  local cur = redis.call('HMGET', ARGV[1] .. 'job:' .. id, 'token', 'status', 'cancel')
  if cur[1] == ARGV[i + 1] and cur[2] == 'running' then
    redis.call('ZADD', KEYS[1], 'XX', until_ms, id)
    if cur[3] == '1' then cancels[#cancels + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancels}
