-- leader: take or keep a lock with a TTL. The holder renews it; others get it once it
-- lapses.
-- KEYS: 1 lock
-- ARGV: 1 candidate id, 2 ttl ms
-- Returns 1 if the candidate holds the lock now, else 0.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
