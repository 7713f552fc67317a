-- enqueue: create a job, queued or scheduled, honouring an idempotency key.
-- KEYS: 1 job hash, 2 ready, 3 scheduled, 4 marker, 5 owner index, 6 idempotency key,
--       7 sequence, 8 queue registry
-- ARGV: 1 id, 2 msgpack record, 3 type, 4 queue, 5 owner, 6 priority (0-9),
--       7 max attempts, 8 run_at ms (0: now), 9 "1" if an idempotency key is given,
--       10 request hash, 11 idempotency ttl ms, 12 created ms (0: now; a restored job
--       keeps its own), 13 attempts history JSON ('' : none)
-- Returns {"created"|"existing"|"conflict", id, status}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[9] == '1' then
  local ex = redis.call('GET', KEYS[6])
  if ex then
    local sep = string.find(ex, ' ', 1, true)
    if sep then
      local eid = string.sub(ex, 1, sep - 1)
      if string.sub(ex, sep + 1) == ARGV[10] then return {'existing', eid, ''} end
      return {'conflict', eid, ''}
    end
  end
  redis.call('SET', KEYS[6], ARGV[1] .. ' ' .. ARGV[10], 'PX', ARGV[11])
end
-- A job restored under its own id may have been restored already (two retries at once):
-- never overwrite a live record, its token fences its current lease.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'existing', ARGV[1], ''} end
local run_at = tonumber(ARGV[8])
local status = 'queued'
if run_at > now then status = 'scheduled' else run_at = now end
local created = tonumber(ARGV[12])
if created <= 0 then created = now end
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'type', ARGV[3], 'queue', ARGV[4], 'owner', ARGV[5],
  'priority', ARGV[6], 'max_attempts', ARGV[7], 'status', status, 'attempt', 0, 'token', 0,
  'run_at', run_at, 'created', created, 'updated', now, 'progress', 0)
if ARGV[13] ~= '' then redis.call('HSET', KEYS[1], 'history', ARGV[13]) end
redis.call('ZADD', KEYS[5], created, ARGV[1])
redis.call('SADD', KEYS[8], ARGV[4])
if status == 'scheduled' then
  redis.call('ZADD', KEYS[3], run_at, ARGV[1])
else
  local seq = redis.call('INCR', KEYS[7])
  redis.call('ZADD', KEYS[2], (9 - tonumber(ARGV[6])) * 1099511627776 + seq, ARGV[1])
  redis.call('ZADD', KEYS[4], 0, 'w')
end
return {'created', ARGV[1], status, tostring(created)}
