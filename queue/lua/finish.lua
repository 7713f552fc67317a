-- finish: end attempts of running jobs of one queue, each only for the holder of its
-- current lease. A worker sends the completions it has at hand in one call.
-- KEYS: 1 working, 2 scheduled, 3 dead, 4 done, 5 queue stats
-- ARGV: 1 key prefix, 2 "done" channel, then groups of 5:
--       id, token, outcome (succeeded | retry | failed | dead | canceled),
--       payload (result JSON on success, else error JSON), retry delay ms
-- Returns, per group, the new status, or "stale" when the token is not the current one.
-- Numbers go to Redis as strings made once per call (see fetch.lua).
local t = redis.call('TIME')
local now = t[1] .. string.sub('00000' .. t[2], -6, -4)
local minute = ':' .. math.floor(tonumber(t[1]) / 60)
local out, counts, ended, done = {}, {}, {}, {}

local function record_error(jk, attempt, history, payload)
  local ok, err = pcall(cjson.decode, payload)
  if not ok or type(err) ~= 'table' then
    err = {code = 'INTERNAL_ERROR', message = 'undecodable error from worker', retryable = false}
  end
  local hist = {}
  if history then
    local hok, h = pcall(cjson.decode, history)
    if hok and type(h) == 'table' then hist = h end
  end
  hist[#hist + 1] = {attempt = tonumber(attempt) or 0, error = err, at = tonumber(now)}
  while #hist > 20 do table.remove(hist, 1) end
  redis.call('HSET', jk, 'error', cjson.encode(err), 'history', cjson.encode(hist), 'updated', now)
end

-- Ends one attempt that holds the current lease; returns the new status.
local function finish(jk, id, outcome, payload, delay)
  if outcome == 'succeeded' then
    -- readers show a succeeded job at 100% with no error or progress message, and take
    -- "finished" as its last update: nothing else to write
    redis.call('HSET', jk, 'status', 'succeeded', 'result', payload, 'finished', now)
    return 'succeeded'
  end
  local cur = redis.call('HMGET', jk, 'attempt', 'max_attempts', 'history', 'cancel', 'forgiven')
  -- a cancel asked for while the attempt ran wins over trying again
  if outcome == 'retry' and cur[4] == '1' then outcome = 'canceled' end
  record_error(jk, cur[1], cur[3], payload)
  -- attempts that count: a forgiven lost lease does not (see reclaim.lua)
  local used = (tonumber(cur[1]) or 0) - (tonumber(cur[5]) or 0)
  if outcome == 'retry' and used < (tonumber(cur[2]) or 0) then
    local due = tonumber(now) + math.max(0, tonumber(delay) or 0)
    -- the next attempt starts from no progress
    redis.call('HSET', jk, 'status', 'scheduled', 'run_at', due, 'progress', 0, 'pmsg', '')
    redis.call('ZADD', KEYS[2], due, id)
    return 'scheduled'
  end
  local final = 'failed'
  if outcome == 'canceled' then
    final = 'canceled'
  elseif outcome == 'retry' or outcome == 'dead' then
    final = 'dead'
  end
  redis.call('HSET', jk, 'status', final, 'finished', now)
  if final == 'dead' then redis.call('ZADD', KEYS[3], now, id) end
  return final
end

for i = 3, #ARGV - 4, 5 do
  local id = ARGV[i]
  local jk = ARGV[1] .. 'job:' .. id
  local cur = redis.call('HMGET', jk, 'token', 'status')
  local final = 'stale'
  if cur[1] == ARGV[i + 1] and cur[2] == 'running' then
    ended[#ended + 1] = id
    final = finish(jk, id, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
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
  n = tostring(n)
  redis.call('HINCRBY', KEYS[5], field, n)
  redis.call('HINCRBY', per_minute, field, n)
end
if next(counts) then redis.call('EXPIRE', per_minute, 7200) end
return out
