/* api/authcache.h — what the gate may know without asking Redis on every request.
 *
 * Credentials: a session found not revoked, an API key record read from Redis. Any
 * revocation anywhere is announced on the auth channel (P ch:auth); every api process's
 * subscriber (wait.h) then calls api_authcache_invalidate, which forgets every entry at
 * once (revocations are rare; a generation counter makes it O(1)). A reader takes a
 * ticket (the generation) before it reads Redis and stores with it: a revocation heard
 * in between refuses the store. While the subscriber is down the cache is disabled (no
 * hits), and entries older than API_AUTHCACHE_TTL_MS are not used either.
 *
 * Rate-limit counters: each bucket's count as last read from Redis plus the requests
 * this process let through since (pending), which a flusher adds to Redis every few
 * milliseconds. A request is let through locally only while the bucket is far from its
 * limit: count + pending + 1 + API_AUTHCACHE_SLACK <= limit, and pending stays under
 * API_AUTHCACHE_PENDING_MAX. Every other process's unflushed requests are fewer than
 * that too, so with up to API_AUTHCACHE_PROCS api processes no bucket ever goes over its
 * limit; near the limit every request is counted in Redis, exactly.
 * Thread-safe. */
#ifndef API_AUTHCACHE_H
#define API_AUTHCACHE_H

#include <stdint.h>

#include "api/auth.h"

#define API_AUTHCACHE_TTL_MS 60000
#define API_AUTHCACHE_PENDING_MAX 65536
#define API_AUTHCACHE_PROCS 32
#define API_AUTHCACHE_SLACK (API_AUTHCACHE_PENDING_MAX * API_AUTHCACHE_PROCS)
#define API_AUTHCACHE_KEY_MAX 200 /* rate-limit bucket key, NUL included */

typedef struct api_authcache api_authcache_t;

/* An API key as the gate knows it. */
typedef struct api_authcache_key {
    char id[API_SID_MAX];
    char user[API_OWNER_MAX];
    api_role_t role;
    int64_t exp_ms;     /* 0: never */
    int64_t touched_ms; /* when this process last recorded its use in PostgreSQL */
} api_authcache_key_t;

/* A disabled cache. NULL on OOM. */
api_authcache_t *api_authcache_new(void);
void api_authcache_free(api_authcache_t *c);

/* The subscriber hears the auth channel: credentials may be cached. */
void api_authcache_enable(api_authcache_t *c);
/* The subscriber lost Redis: revocations may be missed; forget and stop caching. */
void api_authcache_disable(api_authcache_t *c);
/* A revocation: forget every credential. */
void api_authcache_invalidate(api_authcache_t *c);

/* The current generation, taken before a Redis read whose result may be stored. */
uint64_t api_authcache_ticket(api_authcache_t *c);

/* 1 if session sid was found not revoked (and nothing was revoked since). */
int api_authcache_session(api_authcache_t *c, const char *sid, int64_t now_ms);
void api_authcache_session_put(api_authcache_t *c, const char *sid, uint64_t ticket,
                               int64_t now_ms);

/* Copies the key of digest sha (hex) into *out. 1 on a hit. */
int api_authcache_key(api_authcache_t *c, const char *sha, int64_t now_ms,
                      api_authcache_key_t *out);
void api_authcache_key_put(api_authcache_t *c, const char *sha, const api_authcache_key_t *k,
                           uint64_t ticket, int64_t now_ms);
/* Records that the key's use was written at now_ms; returns 1 if the caller should write
 * it (the last write was a minute ago or more), 0 if not. */
int api_authcache_key_touch(api_authcache_t *c, const char *sha, int64_t now_ms);

/* Counts one request of bucket key (limit > 0) locally if it may. Returns 1 with *count
 * (the bucket's count as far as this process knows, this request included) and *reset_ms
 * (window end), or 0: the request must be counted in Redis (api_authcache_count_sync). */
int api_authcache_count(api_authcache_t *c, const char *key, long long limit, int64_t now_ms,
                        long long *count, int64_t *reset_ms);
/* Redis answered count and ttl_ms for key (after adding what was flushed or this
 * request): the new base of local counting. */
void api_authcache_count_sync(api_authcache_t *c, const char *key, long long count,
                              long long ttl_ms, int64_t now_ms);

/* The flusher's side: takes up to max buckets with requests let through locally,
 * copying each key into keys[i] and its pending count into n[i] (moved to in-flight).
 * Returns how many. Then api_authcache_flushed for each with Redis's answer (ok 0: the
 * flush failed; its requests are put back as pending). Also drops buckets whose window
 * ended with nothing pending. */
int api_authcache_take(api_authcache_t *c, char (*keys)[API_AUTHCACHE_KEY_MAX], long long *n,
                       int max, int64_t now_ms);
void api_authcache_flushed(api_authcache_t *c, const char *key, long long n, int ok,
                           long long count, long long ttl_ms, int64_t now_ms);

/* The same for one bucket, by a request that counts in Redis anyway (it adds them to
 * its own count; then api_authcache_flushed): the flusher may be late on a busy machine.
 * Returns how many. */
long long api_authcache_take_one(api_authcache_t *c, const char *key);

#endif
