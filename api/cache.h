/* api/cache.h — the process's cache of GET /v1/jobs/{id} answers, kept current by Redis
 * server-assisted client-side caching (RESP2: tracking with REDIRECT).
 *
 * The long-poll subscriber (wait.h) subscribes its connection to __redis__:invalidate,
 * then enables the cache with its client id; lost, it disables the cache (emptied,
 * nothing stored) until it is back. A request thread turns on tracking on its own
 * connection, redirected to that id (api_cache_track), before a read it may store: Redis
 * then sends an invalidation for any later change of the keys it read.
 *
 * Redis forgets what a connection read when that connection closes, so a closed tracking
 * connection would leave entries that nothing invalidates. Hence: every tracking
 * connection is watched (api_cache_watch_fd; the subscriber polls it) and one closed by
 * Redis clears the cache; a thread whose connection was dropped on our side (q_conn
 * reconnects silently) clears it at the end of that request (api_cache_check).
 *
 * Readers race invalidations: a reader reads a job, an invalidation for it is handled,
 * then the reader stores what it read. So a reader takes a ticket (api_cache_begin)
 * before it reads Redis and stores with it (api_cache_put), which refuses when the
 * job's bucket was invalidated, or the cache cleared or disabled, since the ticket.
 *
 * Entries: job id -> owner, terminal flag and the exact JSON bytes GET sends. Bounded by
 * entries and bytes (least recently used go first), in shards with a lock each.
 * Thread-safe. */
#ifndef API_CACHE_H
#define API_CACHE_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "api/auth.h"
#include "queue/queue.h"

#define API_CACHE_ENTRIES 16384        /* what the api runs with */
#define API_CACHE_BYTES (32u << 20)
#define API_CACHE_BODY_MAX 16384       /* larger answers are not cached */
#define API_CACHE_CHANNEL "__redis__:invalidate"

typedef struct api_cache api_cache_t;

/* Where api_cache_begin saw a job's bucket; opaque to callers. */
typedef struct api_cache_ticket {
    uint64_t epoch, gen;
} api_cache_ticket_t;

/* What api_cache_get copies out. */
typedef struct api_cache_hit {
    char owner[API_OWNER_MAX];
    int terminal;
    size_t len;
    char body[API_CACHE_BODY_MAX];
} api_cache_hit_t;

/* FNV-1a of a job id (the cache's and the long-poll registry's buckets). */
uint32_t api_id_hash(const char *id);

/* A disabled cache of at most max_entries answers and max_bytes (entries included) for
 * the job keys "<key_prefix><id>" (copied; e.g. "cv:job:"). Returns NULL on bad sizes
 * (max_bytes must hold at least one largest answer per shard), out of memory or out of
 * file descriptors. */
api_cache_t *api_cache_new(int max_entries, size_t max_bytes, const char *key_prefix);

/* Frees every entry and the cache; NULL is a no-op. No other thread may use it. */
void api_cache_free(api_cache_t *c);

/* The job key prefix it was made with. Borrowed. */
const char *api_cache_key_prefix(const api_cache_t *c);

/* ---- the subscriber's side ------------------------------------------------------- */

/* The subscriber listens on API_CACHE_CHANNEL as client sub_id (> 0; a new one after
 * each reconnection): start caching. */
void api_cache_enable(api_cache_t *c, long long sub_id);

/* Invalidations may be lost (the subscriber lost Redis): drop every entry and refuse
 * every ticket until enabled again. */
void api_cache_disable(api_cache_t *c);

/* Drops every entry and refuses every outstanding ticket (stays enabled). */
void api_cache_clear(api_cache_t *c);

/* Key (len bytes, not NUL-terminated) changed: api_cache_forget of its job. Keys other
 * than job keys are ignored. */
void api_cache_invalidate(api_cache_t *c, const char *key, size_t len);

/* Job id changed: drops its entry and refuses outstanding tickets of its bucket. The
 * subscriber's way, and a request thread's right after it changed the job itself (so
 * the caller's next GET sees the change before Redis's invalidation arrives). */
void api_cache_forget(api_cache_t *c, const char *id);

/* A descriptor that polls readable when Redis closed a tracking connection; then call
 * api_cache_on_watch. */
int api_cache_watch_fd(const api_cache_t *c);

/* Clears the cache if Redis closed a tracking connection (see api_cache_watch_fd). */
void api_cache_on_watch(api_cache_t *c);

/* Handles the payload of a __redis__:invalidate message (borrowed): an array of key
 * names, one key name, or nil (FLUSHALL/FLUSHDB: everything); anything else clears. */
void api_cache_on_invalidate(api_cache_t *c, const redisReply *payload);

/* ---- the readers' side ----------------------------------------------------------- */

/* Copies job id's entry into *hit. Returns 1 on a hit, 0 when absent or disabled. */
int api_cache_get(api_cache_t *c, const char *id, api_cache_hit_t *hit);

/* Makes q's connection (the calling thread's; one per thread) track what it reads, with
 * invalidations redirected to the current subscriber, and watches it. Returns the
 * subscriber's id, or -1 when the cache is disabled or Redis refused (logged). */
long long api_cache_track(api_cache_t *c, q_conn_t *q);

/* Call at the end of every request on the thread's connection q: if the connection this
 * thread tracked on was dropped, what it read is no longer covered: clears the cache. */
void api_cache_check(api_cache_t *c, q_conn_t *q);

/* Takes a ticket for id after api_cache_track answered sub_id; call before reading the
 * job from Redis. Returns 0, or -1 when the cache is disabled or has another subscriber
 * (do not put). */
int api_cache_begin(api_cache_t *c, const char *id, long long sub_id, api_cache_ticket_t *t);

/* Stores body (len bytes, borrowed; what GET sends) as id's entry, replacing any, if
 * nothing invalidated id's bucket since t was taken for id. Returns 0 if stored, -1 if
 * refused (stale ticket, disabled, too large, out of memory). */
int api_cache_put(api_cache_t *c, const api_cache_ticket_t *t, const char *id,
                  const char *owner, int terminal, const char *body, size_t len);

#endif
