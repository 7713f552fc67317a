-- finish: end attempts of running jobs of one queue, each only for the holder of its
-- current lease. A worker sends the completions it has at hand in one call.
-- KEYS: 1 working, 2 scheduled, 3 dead, 4 done, 5 queue stats
-- ARGV: 1 key prefix, 2 "done" channel, then groups of 5:
--       id, token, outcome (succeeded | retry | failed | dead | canceled),
--       payload (result JSON on success, else error JSON), retry delay ms
-- Returns, per group, the new status, or "stale" when the token is not the current one.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = ':' .. math.floor(now / 60000)
local out, counts, ended, done = {}, {}, {}, {}

local function record_error(jk, cur, payload)
  local ok, err = pcall(cjson.decode, payload)
  if not ok or type(err) ~= 'table' then
    err = {code = 'INTERNAL_ERROR', message = 'undecodable error from worker', retryable = false}
  end
  local hist = {}
  if cur[5] then
    local hok, h = pcall(cjson.decode, cur[5])
    if hok and type(h) == 'table' then hist = h end
  end
  hist[#hist + 1] = {attempt = tonumber(cur[3]) or 0, error = err, at = now}
  while #hist > 20 do table.remove(hist, 1) end
  redis.call('HSET', jk, 'error', cjson.encode(err), 'history', cjson.encode(hist), 'updated', now)
end

for i = 3, #ARGV - 4, 5 do
  local id, outcome, payload = ARGV[i], ARGV[i + 2], ARGV[i + 3]
  local jk = ARGV[1] .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'token', 'status', 'attempt', 'max_attempts', 'history',
    'cancel')
  local final
  if cur[1] ~= ARGV[i + 1] or cur[2] ~= 'running' then
    final = 'stale'
  else
    ended[#ended + 1] = id
    -- a cancel asked for while the attempt ran wins over trying again
    if outcome == 'retry' and cur[6] == '1' then outcome = 'canceled' end
    if outcome == 'succeeded' then
      redis.call('HSET', jk, 'status', 'succeeded', 'result', payload, 'progress', 100,
        'pmsg', '', 'finished', now, 'updated', now, 'error', '')
      final = 'succeeded'
    else
      record_error(jk, cur, payload)
      if outcome == 'retry' and (tonumber(cur[3]) or 0) < (tonumber(cur[4]) or 0) then
        local due = now + math.max(0, tonumber(ARGV[i + 4]) or 0)
        -- the next attempt starts from no progress
        redis.call('HSET', jk, 'status', 'scheduled', 'run_at', due, 'progress', 0, 'pmsg', '')
        redis.call('ZADD', KEYS[2], due, id)
        final = 'scheduled'
      elseif outcome == 'canceled' then
        final = 'canceled'
      elseif outcome == 'retry' or outcome == 'dead' then
        final = 'dead'
      else
        final = 'failed'
      end
      if final ~= 'scheduled' then
        redis.call('HSET', jk, 'status', final, 'finished', now)
        if final == 'dead' then redis.call('ZADD', KEYS[3], now, id) end
      end
    end
    if final ~= 'scheduled' then
      done[#done + 1] = now
      done[#done + 1] = id
    end
    counts[final] = (counts[final] or 0) + 1
  end
  out[#out + 1] = final
end
if #ended > 0 then redis.call('ZREM', KEYS[1], unpack(ended)) end
if #done > 0 then
  redis.call('ZADD', KEYS[4], unpack(done))
  -- one message for every job ended here: their ids, separated by spaces
  local ids = {}
  for k = 2, #done, 2 do ids[#ids + 1] = done[k] end
  redis.call('PUBLISH', ARGV[2], table.concat(ids, ' '))
end
-- totals, and per-minute counts in a key of their own that expires
local per_minute = KEYS[5] .. minute
for status, n in pairs(counts) do
  local field = status == 'scheduled' and 'retried' or status
  redis.call('HINCRBY', KEYS[5], field, n)
  redis.call('HINCRBY', per_minute, field, n)
end
if next(counts) then redis.call('EXPIRE', per_minute, 7200) end
return out
