-- fetch: pop up to n ready jobs and lease them, in one step (nothing is lost if the
-- worker dies after this: the lease expires and the scheduler re-queues the job).
-- KEYS: 1 ready, 2 working, 3 marker, 4 dead, 5 done
-- ARGV: 1 key prefix, 2 n, 3 lease ms, 4 worker id, 5 queue name
-- Returns an array of {id, token, attempt, record}.
-- A job's "updated" is the latest of its updated, started and finished fields (readers
-- take the maximum), so a lease and a success write only started or finished.
-- Numbers go to Redis as strings made once per call: Redis 7.0 formats every Lua number
-- argument with "%.17g", which cost more than the rest of a lease. Tokens go with '%d':
-- a restored job's are near 2^51 (see enqueue.lua), where tostring would round.
local t = redis.call('TIME')
local now = t[1] .. string.sub('00000' .. t[2], -6, -4)
local lease_until = tostring(tonumber(now) + tonumber(ARGV[3]))
local NEXT = {'1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13', '14', '15',
  '16', '17', '18', '19', '20'}
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
local out, leases = {}, {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local jk = ARGV[1] .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'status', 'rec', 'token', 'attempt')
  if cur[1] == 'queued' then
    local tok = (tonumber(cur[3]) or 0) + 1
    local att = (tonumber(cur[4]) or 0) + 1
    redis.call('HSET', jk, 'status', 'running', 'token', NEXT[tok] or string.format('%d', tok),
      'attempt', NEXT[att] or tostring(att), 'worker', ARGV[4], 'started', now)
    leases[#leases + 1] = lease_until
    leases[#leases + 1] = id
    out[#out + 1] = {id, tok, att, cur[2] or ''}
  elseif not cur[1] then
    -- The record is gone: keep the id, dead with the reason, rather than drop it.
    redis.call('HSET', jk, 'status', 'dead', 'queue', ARGV[5], 'attempt', '0', 'max_attempts', '0',
      'created', now, 'updated', now, 'finished', now, 'error',
      '{"code":"CORRUPT_RECORD","message":"job record missing from Redis","retryable":false}')
    redis.call('ZADD', KEYS[4], now, id)
    redis.call('ZADD', KEYS[5], now, id)
  end
  -- any other status: a stale entry of a job that moved on; drop it
end
if #leases > 0 then redis.call('ZADD', KEYS[2], unpack(leases)) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('ZADD', KEYS[3], '0', 'w') end
return out
