-- akey_put: caches an API key (KEYS[1] = P akey:<sha>) read from PostgreSQL.
-- ARGV: id ('-' for a tombstone: revoked, expired or unknown), user, role, exp ms (0:
-- never), ttl ms, force ('1' to overwrite, as revocation and creation do; '0' only if
-- absent, as a load does, so that a load racing a revocation cannot undo it).
if ARGV[6] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'user', ARGV[2], 'role', ARGV[3], 'exp', ARGV[4],
           'used', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
