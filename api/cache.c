/* api/cache.c — the job answer cache: hash tables in locked shards, an LRU list per
 * shard, a generation counter per bucket, an epoch for the whole cache; tracking on the
 * request threads' connections and the watch over them. */
#include "api/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/log.h"

#define SHARDS_MAX 64
#define SHARD_MIN_ENTRIES 64 /* a small cache gets fewer shards, so its LRU stays useful */
#define BUCKETS_MIN 16
#define SHARD_BITS 6         /* hash bits that pick the shard (log2 SHARDS_MAX) */
#define WATCH_EVENTS 16

/* A connection's tag: the subscriber id it redirects invalidations to, kept in its
 * reader's privdata (unused by hiredis's default reply functions). A new connection's
 * is NULL, whatever address its context gets. */
#define TAG(sub_id) ((void *)(uintptr_t)(sub_id))

typedef struct entry {
    struct entry *next;          /* its bucket's chain (or a list of entries to free) */
    struct entry *newer, *older; /* its shard's LRU list */
    uint64_t epoch;              /* the cache's epoch when stored */
    unsigned bucket;
    int terminal;
    size_t len;
    char id[Q_ID_SIZE];
    char owner[API_OWNER_MAX];
    char body[];
} entry_t;

typedef struct shard {
    _Alignas(64) pthread_mutex_t lock; /* each shard on its own cache lines */
    entry_t **chain;                   /* nbuckets chains */
    uint64_t *gen;                     /* nbuckets counters, bumped by each invalidation */
    entry_t *newest, *oldest;
    int count;
    size_t bytes; /* of its entries, headers included */
} shard_t;

struct api_cache {
    _Atomic uint64_t epoch;    /* odd while enabled; enable, disable and clear bump it */
    _Atomic long long sub_id;  /* the subscriber's client id, while enabled */
    int watch;                 /* epoll: tracking connections, for their closing */
    shard_t *shards;
    entry_t **chains; /* every shard's chains, then generations, in one block each */
    uint64_t *gens;
    unsigned nshards, nbuckets; /* powers of two */
    int shard_entries;
    size_t shard_bytes, plen;
    char prefix[];
};

uint32_t api_id_hash(const char *id)
{
    uint32_t h = 2166136261u;
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
    return h;
}

static shard_t *shard_of(const api_cache_t *c, uint32_t h)
{
    return &c->shards[h & (c->nshards - 1)];
}

static unsigned bucket_of(const api_cache_t *c, uint32_t h)
{
    return (h >> SHARD_BITS) & (c->nbuckets - 1);
}

api_cache_t *api_cache_new(int max_entries, size_t max_bytes, const char *key_prefix)
{
    size_t plen = strlen(key_prefix);
    unsigned n = 1, nb = BUCKETS_MIN;
    api_cache_t *c;

    if (max_entries < 1) return NULL;
    while (n < SHARDS_MAX && (unsigned)max_entries / (n * 2) >= SHARD_MIN_ENTRIES) n *= 2;
    if (max_bytes / n < sizeof(entry_t) + API_CACHE_BODY_MAX) return NULL;
    if (!(c = calloc(1, sizeof(*c) + plen + 1))) return NULL;
    memcpy(c->prefix, key_prefix, plen + 1);
    c->plen = plen;
    c->nshards = n;
    c->shard_entries = (int)(((unsigned)max_entries + n - 1) / n);
    c->shard_bytes = max_bytes / n;
    while (nb < (unsigned)c->shard_entries) nb *= 2;
    c->nbuckets = nb;
    atomic_init(&c->epoch, 0);
    atomic_init(&c->sub_id, 0);
    if ((c->watch = epoll_create1(EPOLL_CLOEXEC)) < 0) goto fail_watch;
    c->shards = aligned_alloc(_Alignof(shard_t), n * sizeof(shard_t));
    c->chains = calloc((size_t)n * nb, sizeof(*c->chains));
    c->gens = calloc((size_t)n * nb, sizeof(*c->gens));
    if (!c->shards || !c->chains || !c->gens) goto fail_alloc;
    memset(c->shards, 0, n * sizeof(shard_t));
    for (unsigned i = 0; i < n; i++) {
        pthread_mutex_init(&c->shards[i].lock, NULL);
        c->shards[i].chain = c->chains + (size_t)i * nb;
        c->shards[i].gen = c->gens + (size_t)i * nb;
    }
    return c;
fail_alloc:
    free(c->shards);
    free(c->chains);
    free(c->gens);
    close(c->watch);
fail_watch:
    free(c);
    return NULL;
}

/* Frees a list of entries linked by next. */
static void free_list(entry_t *e)
{
    while (e) {
        entry_t *next = e->next;
        free(e);
        e = next;
    }
}

/* Empties every shard (the epoch already refuses what they held). */
static void purge(api_cache_t *c)
{
    for (unsigned i = 0; i < c->nshards; i++) {
        shard_t *s = &c->shards[i];
        entry_t *e, *dead = NULL;
        pthread_mutex_lock(&s->lock);
        for (e = s->newest; e; e = e->older) e->next = dead, dead = e;
        memset(s->chain, 0, c->nbuckets * sizeof(*s->chain));
        s->newest = s->oldest = NULL;
        s->count = 0;
        s->bytes = 0;
        pthread_mutex_unlock(&s->lock);
        free_list(dead);
    }
}

void api_cache_free(api_cache_t *c)
{
    if (!c) return;
    purge(c);
    for (unsigned i = 0; i < c->nshards; i++) pthread_mutex_destroy(&c->shards[i].lock);
    close(c->watch);
    free(c->shards);
    free(c->chains);
    free(c->gens);
    free(c);
}

const char *api_cache_key_prefix(const api_cache_t *c) { return c->prefix; }

/* ---- shard internals (lock held) ------------------------------------------------- */

/* The link that points to id's entry in chain, or to the chain's final NULL. */
static entry_t **find_locked(entry_t **chain, const char *id)
{
    while (*chain && strcmp((*chain)->id, id) != 0) chain = &(*chain)->next;
    return chain;
}

static void lru_unlink_locked(shard_t *s, entry_t *e)
{
    if (e->newer) e->newer->older = e->older;
    else s->newest = e->older;
    if (e->older) e->older->newer = e->newer;
    else s->oldest = e->newer;
}

static void lru_push_locked(shard_t *s, entry_t *e)
{
    e->newer = NULL;
    e->older = s->newest;
    if (s->newest) s->newest->newer = e;
    else s->oldest = e;
    s->newest = e;
}

/* Takes the entry *link points to out of the shard and prepends it to *dead. */
static void remove_locked(shard_t *s, entry_t **link, entry_t **dead)
{
    entry_t *e = *link;
    *link = e->next;
    lru_unlink_locked(s, e);
    s->count--;
    s->bytes -= sizeof(*e) + e->len;
    e->next = *dead;
    *dead = e;
}

/* ---- the subscriber's side ------------------------------------------------------- */

void api_cache_enable(api_cache_t *c, long long sub_id)
{
    uint64_t e = atomic_load(&c->epoch);
    atomic_store(&c->sub_id, sub_id); /* before the epoch says enabled */
    while (!(e & 1) && !atomic_compare_exchange_weak(&c->epoch, &e, e + 1)) {}
}

void api_cache_disable(api_cache_t *c)
{
    uint64_t e = atomic_load(&c->epoch);
    while ((e & 1) && !atomic_compare_exchange_weak(&c->epoch, &e, e + 1)) {}
    purge(c);
}

void api_cache_clear(api_cache_t *c)
{
    atomic_fetch_add(&c->epoch, 2);
    purge(c);
}

void api_cache_forget(api_cache_t *c, const char *id)
{
    uint32_t h = api_id_hash(id);
    shard_t *s = shard_of(c, h);
    unsigned b = bucket_of(c, h);
    entry_t **link, *dead = NULL;

    pthread_mutex_lock(&s->lock);
    s->gen[b]++;
    if (*(link = find_locked(&s->chain[b], id))) remove_locked(s, link, &dead);
    pthread_mutex_unlock(&s->lock);
    free_list(dead);
}

void api_cache_invalidate(api_cache_t *c, const char *key, size_t len)
{
    char id[Q_ID_SIZE];

    if (len <= c->plen || len - c->plen >= sizeof(id) || memcmp(key, c->prefix, c->plen) != 0)
        return;
    memcpy(id, key + c->plen, len - c->plen);
    id[len - c->plen] = '\0';
    api_cache_forget(c, id);
}

int api_cache_watch_fd(const api_cache_t *c) { return c->watch; }

void api_cache_on_watch(api_cache_t *c)
{
    struct epoll_event ev[WATCH_EVENTS];
    if (epoll_wait(c->watch, ev, WATCH_EVENTS, 0) <= 0) return;
    LOG_INFO("job cache cleared: redis closed a request thread's connection");
    api_cache_clear(c);
}

void api_cache_on_invalidate(api_cache_t *c, const redisReply *p)
{
    if (p->type == REDIS_REPLY_STRING) {
        api_cache_invalidate(c, p->str, p->len);
        return;
    }
    for (size_t i = 0; p->type == REDIS_REPLY_ARRAY && i < p->elements; i++) {
        if (p->element[i]->type != REDIS_REPLY_STRING) goto clear;
        api_cache_invalidate(c, p->element[i]->str, p->element[i]->len);
    }
    if (p->type == REDIS_REPLY_ARRAY) return;
clear: /* nil: a flush; anything else: we cannot tell what changed */
    LOG_INFO("job cache cleared: redis invalidated %s",
             p->type == REDIS_REPLY_NIL ? "every key" : "something unreadable");
    api_cache_clear(c);
}

/* ---- the readers' side ----------------------------------------------------------- */

int api_cache_get(api_cache_t *c, const char *id, api_cache_hit_t *hit)
{
    uint64_t epoch = atomic_load(&c->epoch);
    uint32_t h = api_id_hash(id);
    shard_t *s = shard_of(c, h);
    entry_t *e;
    int found = 0;

    if (!(epoch & 1)) return 0;
    pthread_mutex_lock(&s->lock);
    e = *find_locked(&s->chain[bucket_of(c, h)], id);
    if (e && e->epoch == epoch) {
        memcpy(hit->owner, e->owner, sizeof(hit->owner));
        hit->terminal = e->terminal;
        hit->len = e->len;
        memcpy(hit->body, e->body, e->len);
        lru_unlink_locked(s, e);
        lru_push_locked(s, e);
        found = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* Set once this thread's connection tracked (api_cache_check's memory of it). */
static _Thread_local int tl_tracking;

long long api_cache_track(api_cache_t *c, q_conn_t *q)
{
    long long sub = atomic_load(&c->sub_id);
    struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT};
    redisContext *rc;
    redisReply *r;
    int ok;

    if (!(atomic_load(&c->epoch) & 1) || !(rc = q_conn_redis(q))) return -1;
    if (rc->reader->privdata == TAG(sub)) return sub;
    r = q_command(q, "CLIENT TRACKING on REDIRECT %lld", sub);
    ok = r && r->type == REDIS_REPLY_STATUS;
    if (r && !ok)
        LOG_WARN("job cache: redis refused tracking: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
    freeReplyObject(r);
    if (!ok || !(rc = q_conn_redis(q))) return -1;
    /* Watched before any read it may cache; a connection already closed is reported. */
    if (epoll_ctl(c->watch, EPOLL_CTL_ADD, rc->fd, &ev) != 0 &&
        (errno != EEXIST || epoll_ctl(c->watch, EPOLL_CTL_MOD, rc->fd, &ev) != 0)) {
        LOG_WARN("job cache: cannot watch a connection: %s", strerror(errno));
        return -1;
    }
    rc->reader->privdata = TAG(sub);
    tl_tracking = 1;
    return sub;
}

void api_cache_check(api_cache_t *c, q_conn_t *q)
{
    redisContext *rc;
    if (!tl_tracking || ((rc = q_conn_redis(q)) && rc->reader->privdata)) return;
    tl_tracking = 0;
    LOG_INFO("job cache cleared: a request thread lost its redis connection");
    api_cache_clear(c);
}

int api_cache_begin(api_cache_t *c, const char *id, long long sub_id, api_cache_ticket_t *t)
{
    uint32_t h = api_id_hash(id);
    shard_t *s = shard_of(c, h);

    t->epoch = atomic_load(&c->epoch);
    if (!(t->epoch & 1) || atomic_load(&c->sub_id) != sub_id) return -1;
    pthread_mutex_lock(&s->lock);
    t->gen = s->gen[bucket_of(c, h)];
    pthread_mutex_unlock(&s->lock);
    /* enabled again with another subscriber between the two loads: put refuses */
    return 0;
}

int api_cache_put(api_cache_t *c, const api_cache_ticket_t *t, const char *id,
                  const char *owner, int terminal, const char *body, size_t len)
{
    uint32_t h = api_id_hash(id);
    shard_t *s = shard_of(c, h);
    unsigned b = bucket_of(c, h);
    entry_t **link, *e, *dead = NULL;
    int rc = -1;

    if (!owner) owner = ""; /* seen by admins only, as a job without an owner is */
    if (len > API_CACHE_BODY_MAX || strlen(id) >= sizeof(e->id) ||
        strlen(owner) >= sizeof(e->owner) || !(e = malloc(sizeof(*e) + len)))
        return -1;
    memset(e, 0, sizeof(*e));
    strcpy(e->id, id);
    strcpy(e->owner, owner);
    e->epoch = t->epoch;
    e->bucket = b;
    e->terminal = terminal;
    e->len = len;
    memcpy(e->body, body, len);
    pthread_mutex_lock(&s->lock);
    if ((t->epoch & 1) && atomic_load(&c->epoch) == t->epoch && s->gen[b] == t->gen) {
        if (*(link = find_locked(&s->chain[b], id))) remove_locked(s, link, &dead);
        e->next = s->chain[b];
        s->chain[b] = e;
        lru_push_locked(s, e);
        s->count++;
        s->bytes += sizeof(*e) + len;
        /* never e itself: it is the newest and a shard holds at least one largest entry */
        while (s->count > c->shard_entries || s->bytes > c->shard_bytes) {
            entry_t *old = s->oldest;
            remove_locked(s, find_locked(&s->chain[old->bucket], old->id), &dead);
        }
        e = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    free(e);
    free_list(dead);
    return rc;
}
