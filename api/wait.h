/* api/wait.h — long-poll waiters: requests waiting for a job to finish.
 *
 * One registry per api process. A subscriber thread holds its own Redis connection
 * SUBSCRIBEd to the "done" channel (reconnecting with backoff) and wakes the waiters
 * registered for each job id it hears. After every (re)subscription it wakes all
 * waiters, so a job that ended while the channel was down is found by re-reading it.
 * At most max waiters are registered at once: civetweb holds a thread per waiter.
 * The same connection keeps the job cache current (cache.h): subscribed to its channel
 * as well, it enables the cache with its client id, hands it the invalidations and the
 * closings of tracking connections, and disables it when it loses Redis. */
#ifndef API_WAIT_H
#define API_WAIT_H

#include <pthread.h>
#include <stdint.h>

#include "api/authcache.h"
#include "api/cache.h"
#include "queue/queue.h"

typedef struct api_waits api_waits_t;

/* One waiting request; caller-allocated (on the handler's stack), set up by
 * api_wait_begin and released by api_wait_end. Fields are private. */
typedef struct api_waiter {
    char id[Q_ID_SIZE];
    int fired;
    pthread_cond_t cond;
    struct api_waiter *next;
} api_waiter_t;

/* Creates the registry and starts its subscriber thread on channel (copied) of Redis
 * host:port (connect timeout timeout_ms), keeping cache (borrowed; NULL: none) current,
 * and auth (borrowed; NULL: none) from auth_channel (copied), where revocations are
 * announced.
 * Returns NULL if it cannot allocate or start the thread. */
api_waits_t *api_waits_new(const char *host, int port, int timeout_ms, const char *channel,
                           int max, api_cache_t *cache, const char *auth_channel,
                           api_authcache_t *auth);

/* Stops the subscriber, wakes every waiter and refuses new ones (call before mg_stop so
 * no request thread stays blocked). Idempotent. */
void api_waits_close(api_waits_t *w);

/* Closes (if needed) and frees; NULL is a no-op. No waiter may remain registered. */
void api_waits_free(api_waits_t *w);

/* Registers wt for job id (copied). Returns 0, or -1 when max waiters are registered
 * or the registry is closed (wt is then not registered: do not call api_wait_end). */
int api_wait_begin(api_waits_t *w, api_waiter_t *wt, const char *id);

/* Blocks until wt is woken or timeout_ms pass. Returns 1 if woken (the job may have
 * finished: re-read it), 0 on timeout, -1 if the registry is closing. Clears the wake. */
int api_wait(api_waits_t *w, api_waiter_t *wt, int64_t timeout_ms);

/* Unregisters wt. */
void api_wait_end(api_waits_t *w, api_waiter_t *wt);

#endif
