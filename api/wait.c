/* api/wait.c — long-poll registry and its "done" channel subscriber. */
#include "api/wait.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "api/cache.h"
#include "common/log.h"

#define NBUCKETS 256
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct api_waits {
    pthread_mutex_t lock;
    pthread_condattr_t cattr; /* CLOCK_MONOTONIC, for every cond below */
    pthread_cond_t stop;      /* interrupts the subscriber's backoff */
    api_waiter_t *bucket[NBUCKETS];
    int count, max, closed, started;
    pthread_t thread;
    redisContext *sub; /* the subscriber's connection while it listens (lock) */
    api_cache_t *cache; /* kept current from this connection (NULL: none) */
    api_authcache_t *auth; /* the same, from auth_channel (NULL: none) */
    char *host, *channel, *auth_channel;
    int port, timeout_ms;
};

static unsigned bucket_of(const char *id) { return api_id_hash(id) % NBUCKETS; }

static struct timespec deadline_in(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Wakes the waiters of id, or every waiter when id is NULL. */
static void wake(api_waits_t *w, const char *id)
{
    pthread_mutex_lock(&w->lock);
    for (unsigned b = id ? bucket_of(id) : 0; b < NBUCKETS; b++) {
        for (api_waiter_t *wt = w->bucket[b]; wt; wt = wt->next) {
            if (id && strcmp(wt->id, id) != 0) continue;
            wt->fired = 1;
            pthread_cond_signal(&wt->cond);
        }
        if (id) break;
    }
    pthread_mutex_unlock(&w->lock);
}

/* Gets c's client id for the cache, checking that Redis knows client tracking. Returns
 * the id, 0 if Redis cannot (logged: the cache stays off), -1 on a connection error. */
static long long cache_client_id(redisContext *c)
{
    redisReply *r = redisCommand(c, "CLIENT TRACKING off"); /* a no-op since Redis 6 */
    long long id = -1;

    if (r && r->type == REDIS_REPLY_STATUS) {
        freeReplyObject(r);
        r = redisCommand(c, "CLIENT ID");
    }
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        id = r->integer;
    } else if (r) {
        LOG_WARN("job cache off: redis cannot do client tracking: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        id = 0;
    }
    freeReplyObject(r);
    return id;
}

/* Connects and subscribes (with a cache, to its channel too). Returns the context,
 * published in w->sub, with *cache_id set (the client id to enable the cache with; 0:
 * none), or NULL (logged; also NULL when the registry closed meanwhile). */
static redisContext *subscribe(api_waits_t *w, long long *cache_id)
{
    struct timeval tv = {w->timeout_ms / 1000, (w->timeout_ms % 1000) * 1000};
    struct timeval forever = {0, 0};
    redisReply *r = NULL;
    redisContext *c = redisConnectWithTimeout(w->host, w->port, tv);
    int published = 0;

    *cache_id = 0;
    if (!c) return NULL;
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK || redisEnableKeepAlive(c) != REDIS_OK ||
        q_redis_auth(c) != 0)
        goto fail;
    if (w->cache && (*cache_id = cache_client_id(c)) < 0) goto fail;
    {
        const char *argv[4] = {"SUBSCRIBE", w->channel};
        int argc = 2;
        if (*cache_id) argv[argc++] = API_CACHE_CHANNEL;
        if (w->auth) argv[argc++] = w->auth_channel;
        r = redisCommandArgv(c, argc, argv, NULL);
        /* one confirmation per channel */
        for (int i = 1; i < argc - 1 && r && r->type == REDIS_REPLY_ARRAY && r->elements == 3;
             i++) {
            freeReplyObject(r);
            r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) r = NULL;
        }
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) goto fail;
        freeReplyObject(r);
        r = NULL;
    }
    /* Block on the channel for as long as it takes; TCP keepalive finds a dead peer. */
    if (redisSetTimeout(c, forever) != REDIS_OK) goto fail;
    pthread_mutex_lock(&w->lock);
    if (!w->closed) {
        w->sub = c;
        published = 1;
    }
    pthread_mutex_unlock(&w->lock);
    if (!published) {
        redisFree(c);
        return NULL;
    }
    return c;
fail:
    LOG_WARN("long-poll subscriber: redis %s:%d: %s", w->host, w->port,
             c->err ? c->errstr : r && r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
    freeReplyObject(r);
    redisFree(c);
    return NULL;
}

/* Handles one message: job ids (separated by spaces: a worker's finish call announces
 * all the jobs it ended at once) on the done channel, or invalidated keys. */
static void on_message(api_waits_t *w, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
        strcmp(r->element[0]->str, "message") != 0)
        return;
    if (w->cache && strcmp(r->element[1]->str, API_CACHE_CHANNEL) == 0)
        api_cache_on_invalidate(w->cache, r->element[2]);
    else if (w->auth && strcmp(r->element[1]->str, w->auth_channel) == 0)
        api_authcache_invalidate(w->auth); /* a session or key was revoked somewhere */
    else if (r->element[2]->type == REDIS_REPLY_STRING)
        for (const char *p = r->element[2]->str; *p;) {
            size_t n = strcspn(p, " ");
            char id[Q_ID_SIZE];
            if (n > 0 && n < sizeof(id)) {
                memcpy(id, p, n);
                id[n] = '\0';
                wake(w, id);
            }
            p += n;
            p += strspn(p, " ");
        }
}

/* Handles messages until c fails (or is shut down); with a cache, also watches its
 * tracking connections. */
static void listen_on(api_waits_t *w, redisContext *c)
{
    struct pollfd pf[2] = {{.fd = c->fd, .events = POLLIN},
                           {.fd = w->cache ? api_cache_watch_fd(w->cache) : -1,
                            .events = POLLIN}};
    for (;;) {
        void *r = NULL;
        if (redisReaderGetReply(c->reader, &r) != REDIS_OK) return;
        if (r) { /* one already read */
            on_message(w, r);
            freeReplyObject(r);
            continue;
        }
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (pf[1].revents) api_cache_on_watch(w->cache);
        if (pf[0].revents && redisBufferRead(c) != REDIS_OK) return;
    }
}

static void *on_subscriber(void *arg)
{
    api_waits_t *w = arg;
    int backoff = 0, closed = 0;
    long long cache_id;

    while (!closed) {
        redisContext *c = subscribe(w, &cache_id);
        if (c) {
            if (backoff) LOG_INFO("long-poll subscriber: listening on %s again", w->channel);
            backoff = 0;
            if (cache_id) api_cache_enable(w->cache, cache_id);
            if (w->auth) api_authcache_enable(w->auth);
            wake(w, NULL); /* a job may have ended while we were not listening */
            listen_on(w, c);
            /* Invalidations may be lost from here on: nothing cached can be trusted. */
            if (cache_id) api_cache_disable(w->cache);
            if (w->auth) api_authcache_disable(w->auth);
            pthread_mutex_lock(&w->lock);
            w->sub = NULL;
            closed = w->closed;
            pthread_mutex_unlock(&w->lock);
            if (!closed)
                LOG_WARN("long-poll subscriber: lost redis: %s",
                         c->err ? c->errstr : c->reader->errstr);
            redisFree(c);
        }
        backoff = backoff ? backoff * 2 : BACKOFF_MIN_MS;
        if (backoff > BACKOFF_MAX_MS) backoff = BACKOFF_MAX_MS;
        pthread_mutex_lock(&w->lock);
        if (!w->closed) {
            struct timespec until = deadline_in(backoff);
            pthread_cond_timedwait(&w->stop, &w->lock, &until);
        }
        closed = w->closed;
        pthread_mutex_unlock(&w->lock);
    }
    return NULL;
}

api_waits_t *api_waits_new(const char *host, int port, int timeout_ms, const char *channel,
                           int max, api_cache_t *cache, const char *auth_channel,
                           api_authcache_t *auth)
{
    api_waits_t *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->host = strdup(host);
    w->channel = strdup(channel);
    w->auth_channel = strdup(auth && auth_channel ? auth_channel : "");
    w->auth = auth;
    if (!w->host || !w->channel || !w->auth_channel) goto fail_strings;
    w->port = port;
    w->timeout_ms = timeout_ms;
    w->max = max;
    w->cache = cache;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_init(&w->cattr);
    pthread_condattr_setclock(&w->cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->stop, &w->cattr);
    if (pthread_create(&w->thread, NULL, on_subscriber, w) != 0) goto fail_thread;
    w->started = 1;
    return w;
fail_thread:
    pthread_cond_destroy(&w->stop);
    pthread_condattr_destroy(&w->cattr);
    pthread_mutex_destroy(&w->lock);
fail_strings:
    free(w->host);
    free(w->channel);
    free(w->auth_channel);
    free(w);
    return NULL;
}

void api_waits_close(api_waits_t *w)
{
    pthread_mutex_lock(&w->lock);
    w->closed = 1;
    if (w->sub) shutdown(w->sub->fd, SHUT_RDWR); /* unblocks its redisGetReply */
    pthread_cond_signal(&w->stop);
    for (unsigned b = 0; b < NBUCKETS; b++)
        for (api_waiter_t *wt = w->bucket[b]; wt; wt = wt->next) pthread_cond_signal(&wt->cond);
    pthread_mutex_unlock(&w->lock);
    if (w->started) pthread_join(w->thread, NULL);
    w->started = 0;
}

void api_waits_free(api_waits_t *w)
{
    if (!w) return;
    api_waits_close(w);
    pthread_cond_destroy(&w->stop);
    pthread_condattr_destroy(&w->cattr);
    pthread_mutex_destroy(&w->lock);
    free(w->host);
    free(w->channel);
    free(w->auth_channel);
    free(w);
}

int api_wait_begin(api_waits_t *w, api_waiter_t *wt, const char *id)
{
    int rc = -1;
    pthread_mutex_lock(&w->lock);
    if (!w->closed && w->count < w->max) {
        unsigned b = bucket_of(id);
        snprintf(wt->id, sizeof(wt->id), "%s", id);
        wt->fired = 0;
        pthread_cond_init(&wt->cond, &w->cattr);
        wt->next = w->bucket[b];
        w->bucket[b] = wt;
        w->count++;
        rc = 0;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int api_wait(api_waits_t *w, api_waiter_t *wt, int64_t timeout_ms)
{
    struct timespec until = deadline_in(timeout_ms);
    int rc;
    pthread_mutex_lock(&w->lock);
    while (!wt->fired && !w->closed)
        if (pthread_cond_timedwait(&wt->cond, &w->lock, &until) == ETIMEDOUT) break;
    rc = w->closed ? -1 : wt->fired;
    wt->fired = 0;
    pthread_mutex_unlock(&w->lock);
    return rc;
}

void api_wait_end(api_waits_t *w, api_waiter_t *wt)
{
    pthread_mutex_lock(&w->lock);
    for (api_waiter_t **p = &w->bucket[bucket_of(wt->id)]; *p; p = &(*p)->next) {
        if (*p == wt) {
            *p = wt->next;
            w->count--;
            break;
        }
    }
    pthread_mutex_unlock(&w->lock);
    pthread_cond_destroy(&wt->cond);
}
