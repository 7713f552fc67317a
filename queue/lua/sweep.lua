-- sweep: drop index entries (owner index, dead set) older than a cutoff whose job record
-- has expired from Redis (the job lives on in the PostgreSQL archive).
-- KEYS: 1 sorted set scored by time
-- ARGV: 1 key prefix, 2 cutoff ms, 3 limit, 4 offset (entries kept by earlier calls of
--       one sweep, which stay at the old end)
-- Returns {entries looked at, entries removed}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', tonumber(ARGV[4]),
  tonumber(ARGV[3]))
local removed = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. 'job:' .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    removed = removed + 1
  end
end
return {#ids, removed}
