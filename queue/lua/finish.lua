-- finish: end an attempt of a running job, only for the holder of the current lease.
-- KEYS: 1 job hash, 2 working, 3 scheduled, 4 dead, 5 done, 6 queue stats
-- ARGV: 1 id, 2 token, 3 outcome (succeeded | retry | failed | dead | canceled),
--       4 payload (result JSON on success, else error JSON), 5 retry delay ms,
--       6 "done" channel
-- Returns the new status, or "stale" when the token is not the current one.
local jk = KEYS[1]
local cur = redis.call('HMGET', jk, 'token', 'status', 'attempt', 'max_attempts', 'history')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then return 'stale' end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, outcome = ARGV[1], ARGV[3]
local final
redis.call('ZREM', KEYS[2], id)
if outcome == 'succeeded' then
  redis.call('HSET', jk, 'status', 'succeeded', 'result', ARGV[4], 'progress', 100,
    'finished', now, 'updated', now)
  redis.call('HDEL', jk, 'error')
  final = 'succeeded'
else
  local ok, err = pcall(cjson.decode, ARGV[4])
  if not ok or type(err) ~= 'table' then
    err = {code = 'INTERNAL_ERROR', message = 'undecodable error from worker', retryable = false}
  end
  local att = tonumber(cur[3]) or 0
  local hist = {}
  if cur[5] then
    local hok, h = pcall(cjson.decode, cur[5])
    if hok and type(h) == 'table' then hist = h end
  end
  hist[#hist + 1] = {attempt = att, error = err, at = now}
  while #hist > 20 do table.remove(hist, 1) end
  redis.call('HSET', jk, 'error', cjson.encode(err), 'history', cjson.encode(hist), 'updated', now)
  if outcome == 'retry' and att < (tonumber(cur[4]) or 0) then
    local due = now + math.max(0, tonumber(ARGV[5]) or 0)
    redis.call('HSET', jk, 'status', 'scheduled', 'run_at', due)
    redis.call('ZADD', KEYS[3], due, id)
    redis.call('HINCRBY', KEYS[6], 'retried', 1)
    return 'scheduled'
  elseif outcome == 'canceled' then
    final = 'canceled'
  elseif outcome == 'retry' or outcome == 'dead' then
    final = 'dead'
  else
    final = 'failed'
  end
  redis.call('HSET', jk, 'status', final, 'finished', now)
  if final == 'dead' then redis.call('ZADD', KEYS[4], now, id) end
end
redis.call('ZADD', KEYS[5], now, id)
redis.call('HINCRBY', KEYS[6], final, 1)
redis.call('HINCRBY', KEYS[6], final .. ':' .. math.floor(now / 60000), 1)
redis.call('PUBLISH', ARGV[6], id)
return final
