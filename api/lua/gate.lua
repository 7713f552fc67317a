-- gate: the Redis half of authenticating and rate-limiting one request, in one call.
-- KEYS[1] credential state: P rvk:<sid> (mode s) | P akey:<sha> (mode k) | unused (n)
-- KEYS[2] rate-limit counter P rl:<bucket>:<id>
-- ARGV: mode, limit (0: none), window ms, now ms, requests to count (the flusher adds
-- several counted locally at once)
-- Returns {state, count, ttl ms} and, for an API key, {.., id, user, role, touch, exp}:
--   state 1 allowed, 0 over the limit, -1 session revoked, -2 key not cached (load it),
--   -3 key invalid (revoked, expired or unknown: a tombstone). A refused credential is not
--   counted. touch is 1 when the key's last use should be written to PostgreSQL (once a
--   minute at most).
local mode, now = ARGV[1], tonumber(ARGV[4])
local info
if mode == 's' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, 0, 0} end
elseif mode == 'k' then
  info = redis.call('HMGET', KEYS[1], 'id', 'user', 'role', 'exp', 'used')
  if not info[1] then return {-2, 0, 0} end
  if info[1] == '-' then return {-3, 0, 0} end
  local exp = tonumber(info[4]) or 0
  if exp > 0 and exp <= now then return {-3, 0, 0} end
end
local limit, count, ttl = tonumber(ARGV[2]), 0, 0
if limit > 0 then
  local n = tonumber(ARGV[5]) or 1
  count = redis.call('INCRBY', KEYS[2], n)
  ttl = redis.call('PTTL', KEYS[2])
  if count == n or ttl < 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
    ttl = tonumber(ARGV[3])
  end
end
local state = 1
if limit > 0 and count > limit then state = 0 end
if not info then return {state, count, ttl} end
local touch = 0
if state == 1 and (tonumber(info[5]) or 0) + 60000 <= now then
  redis.call('HSET', KEYS[1], 'used', ARGV[4])
  touch = 1
end
return {state, count, ttl, info[1], info[2], info[3], touch, info[4] or '0'}
