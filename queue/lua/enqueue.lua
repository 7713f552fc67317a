-- enqueue: create jobs, each queued or scheduled and honouring its idempotency key, in
-- one call (the api gathers the jobs of concurrent requests; the CLI sends its batches).
-- Each job is dealt with as if alone: jobs earlier in the call are seen by later ones.
-- KEYS: 8 per job: 1 job hash, 2 ready, 3 scheduled, 4 marker, 5 owner index,
--       6 idempotency key, 7 sequence, 8 queue registry
-- ARGV: 12 per job: 1 id, 2 msgpack record, 3 queue, 4 priority (0-9), 5 max attempts,
--       6 run_at ms (0: now), 7 "1" if an idempotency key is given, 8 request hash,
--       9 idempotency ttl ms, 10 created ms (0: now; a restored job keeps its own),
--       11 attempts history JSON ('' : none), 12 "1" if the caller chose the id (a
--       restore: the job may be in Redis already)
-- Returns per job one string: "created <created ms>" (under the id given), or "existing
-- <id>" / "conflict <id>" (the earlier job); one string, not a table, as the reply to a
-- batch is built and read for every job of every POST.
-- The hash holds what scripts read; the record has the rest (type, owner, input), for
-- readers in C. No attempt, token or progress until there is one (0), no run_at when it
-- is the creation time, no updated until a change after the creation. Numbers go to
-- Redis as strings (see fetch.lua).
local t = redis.call('TIME')
local now_s = t[1] .. string.sub('00000' .. t[2], -6, -4)
local now = tonumber(now_s)
local njobs = #KEYS / 8
local out, registered, markers = {}, {}, {}
local seq -- the last number taken from the sequence (for the queued jobs of this call)
-- sorted-set additions, per key, made once all jobs are dealt with (one ZADD per key;
-- nothing in the loop reads these sets)
local adds, order = {}, {}

local function add(key, score, member)
  local list = adds[key]
  if not list then
    list = {}
    adds[key] = list
    order[#order + 1] = key
  end
  list[#list + 1] = score
  list[#list + 1] = member
end

-- Enqueues the job whose keys start after KEYS[k] and arguments after ARGV[a].
local function enqueue(k, a)
  local id, queue, run_at = ARGV[a + 1], ARGV[a + 3], ARGV[a + 6]
  if ARGV[a + 7] == '1' then
    local ex = redis.call('GET', KEYS[k + 6])
    if ex then
      local sep = string.find(ex, ' ', 1, true)
      if sep then
        local eid = string.sub(ex, 1, sep - 1)
        if string.sub(ex, sep + 1) == ARGV[a + 8] then return 'existing ' .. eid end
        return 'conflict ' .. eid
      end
    end
    redis.call('SET', KEYS[k + 6], id .. ' ' .. ARGV[a + 8], 'PX', ARGV[a + 9])
  end
  local jk = KEYS[k + 1]
  -- A job restored under its own id may have been restored already (two retries at
  -- once): never overwrite a live record, its token fences its current lease.
  if ARGV[a + 12] == '1' and redis.call('EXISTS', jk) == 1 then return 'existing ' .. id end
  local created = ARGV[a + 10]
  if created == '0' then created = now_s end
  local status = 'queued'
  if run_at ~= '0' and tonumber(run_at) > now then
    status = 'scheduled'
    redis.call('HSET', jk, 'rec', ARGV[a + 2], 'status', status, 'queue', queue,
      'priority', ARGV[a + 4], 'max_attempts', ARGV[a + 5], 'created', created, 'run_at', run_at)
    add(KEYS[k + 3], run_at, id)
  else
    redis.call('HSET', jk, 'rec', ARGV[a + 2], 'status', status, 'queue', queue,
      'priority', ARGV[a + 4], 'max_attempts', ARGV[a + 5], 'created', created)
    if not seq then seq = redis.call('INCRBY', KEYS[k + 7], njobs) - njobs end -- one call each
    seq = seq + 1
    add(KEYS[k + 2], string.format('%d', (9 - tonumber(ARGV[a + 4])) * 1099511627776 + seq), id)
    markers[KEYS[k + 4]] = true
  end
  if created ~= now_s then redis.call('HSET', jk, 'updated', now_s) end
  -- A restored job's leases take tokens above any of its earlier life (a worker that
  -- held one then may still send its outcome): that life's tokens counted up from 0, or
  -- from an earlier restore's time, never near 1000 per millisecond.
  if ARGV[a + 12] == '1' then redis.call('HSET', jk, 'token', string.format('%d', now * 1000)) end
  if ARGV[a + 11] ~= '' then redis.call('HSET', jk, 'history', ARGV[a + 11]) end
  add(KEYS[k + 5], created, id)
  if not registered[queue] then
    registered[queue] = true
    redis.call('SADD', KEYS[k + 8], queue)
  end
  return 'created ' .. created
end

for j = 0, njobs - 1 do out[j + 1] = enqueue(j * 8, j * 12) end
for _, key in ipairs(order) do redis.call('ZADD', key, unpack(adds[key])) end
-- a worker blocked on a marker wakes once the whole call has run
for marker in pairs(markers) do redis.call('ZADD', marker, '0', 'w') end
return out
