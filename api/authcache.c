/* api/authcache.c — credentials and rate-limit counters known locally (see the header). */
#include "api/authcache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "api/cache.h" /* api_id_hash */

#define SHARDS 16
#define BUCKETS 256
#define SHARD_MAX 4096      /* entries per shard */
#define WINDOW_GUARD_MS 100 /* near a window's end, count in Redis */
#define EXPIRED_KEEP_MS 1000

/* Readers (every request) hold a shard's lock shared; only adding and dropping entries
 * and storing credentials hold it exclusive. What readers change is atomic, so that a
 * reader descheduled while it holds the lock never makes the others wait. */
typedef struct entry {
    struct entry *next;
    uint64_t gen;
    int64_t stored_ms;
    api_authcache_key_t key;               /* "k:" entries */
    _Atomic int64_t touched_ms;            /* "k:" entries */
    _Atomic long long known, pending, inflight; /* counters */
    _Atomic int64_t reset_ms;
    char name[];
} entry_t;

typedef struct shard {
    pthread_rwlock_t mu;
    entry_t *b[BUCKETS];
    int n;
} shard_t;

struct api_authcache {
    atomic_uint_fast64_t gen;
    atomic_int enabled;
    shard_t cred[SHARDS];
    shard_t cnt[SHARDS];
};

api_authcache_t *api_authcache_new(void)
{
    api_authcache_t *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    atomic_init(&c->gen, 1);
    atomic_init(&c->enabled, 0);
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* glibc's default lets a steady stream of readers starve a writer for seconds */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    for (int i = 0; i < SHARDS; i++) {
        pthread_rwlock_init(&c->cred[i].mu, &attr);
        pthread_rwlock_init(&c->cnt[i].mu, &attr);
    }
    pthread_rwlockattr_destroy(&attr);
    return c;
}

static void shard_clear(shard_t *s)
{
    for (int i = 0; i < BUCKETS; i++) {
        for (entry_t *e = s->b[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
        s->b[i] = NULL;
    }
    s->n = 0;
}

void api_authcache_free(api_authcache_t *c)
{
    if (!c) return;
    for (int i = 0; i < SHARDS; i++) {
        shard_clear(&c->cred[i]);
        shard_clear(&c->cnt[i]);
        pthread_rwlock_destroy(&c->cred[i].mu);
        pthread_rwlock_destroy(&c->cnt[i].mu);
    }
    free(c);
}

void api_authcache_enable(api_authcache_t *c)
{
    atomic_fetch_add(&c->gen, 1);
    atomic_store(&c->enabled, 1);
}

void api_authcache_disable(api_authcache_t *c)
{
    atomic_store(&c->enabled, 0);
    atomic_fetch_add(&c->gen, 1);
}

void api_authcache_invalidate(api_authcache_t *c) { atomic_fetch_add(&c->gen, 1); }

uint64_t api_authcache_ticket(api_authcache_t *c)
{
    /* 0 never matches an entry: nothing read while disabled is stored */
    return atomic_load(&c->enabled) ? atomic_load(&c->gen) : 0;
}

/* ---- tables ---------------------------------------------------------------------- */

static shard_t *shard_of(shard_t *table, const char *name, uint32_t *h)
{
    *h = api_id_hash(name);
    return &table[*h % SHARDS];
}

/* The entry named name in s (locked), or NULL. */
static entry_t *find(shard_t *s, uint32_t h, const char *name)
{
    for (entry_t *e = s->b[(h / SHARDS) % BUCKETS]; e; e = e->next)
        if (strcmp(e->name, name) == 0) return e;
    return NULL;
}

/* Drops the entries of s (locked) that keep(e) refuses. */
static void sweep(shard_t *s, int (*keep)(const entry_t *e, const void *arg), const void *arg)
{
    for (int i = 0; i < BUCKETS; i++) {
        entry_t **p = &s->b[i];
        while (*p) {
            entry_t *e = *p;
            if (keep(e, arg)) {
                p = &e->next;
            } else {
                *p = e->next;
                free(e);
                s->n--;
            }
        }
    }
}

/* Finds or adds name in s (locked). NULL when full or out of memory. */
static entry_t *upsert(shard_t *s, uint32_t h, const char *name,
                       int (*keep)(const entry_t *e, const void *arg), const void *arg)
{
    entry_t *e = find(s, h, name);
    size_t len = strlen(name);
    if (e) return e;
    if (s->n >= SHARD_MAX) sweep(s, keep, arg);
    if (s->n >= SHARD_MAX || !(e = calloc(1, sizeof(*e) + len + 1))) return NULL;
    memcpy(e->name, name, len + 1);
    e->next = s->b[(h / SHARDS) % BUCKETS];
    s->b[(h / SHARDS) % BUCKETS] = e;
    s->n++;
    return e;
}

/* ---- credentials ----------------------------------------------------------------- */

struct cred_ctx {
    uint64_t gen;
    int64_t now_ms;
};

static int cred_fresh(const entry_t *e, const void *arg)
{
    const struct cred_ctx *x = arg;
    return e->gen == x->gen && x->now_ms - e->stored_ms < API_AUTHCACHE_TTL_MS;
}

/* Looks name up; copies its key record into out (when not NULL). 1 on a hit. */
static int cred_get(api_authcache_t *c, const char *name, int64_t now_ms,
                    api_authcache_key_t *out)
{
    struct cred_ctx x = {atomic_load(&c->gen), now_ms};
    uint32_t h;
    shard_t *s;
    entry_t *e;
    int hit = 0;

    if (!atomic_load(&c->enabled)) return 0;
    s = shard_of(c->cred, name, &h);
    pthread_rwlock_rdlock(&s->mu);
    if ((e = find(s, h, name)) && cred_fresh(e, &x)) {
        hit = 1;
        if (out) {
            *out = e->key;
            out->touched_ms = atomic_load(&e->touched_ms);
        }
    }
    pthread_rwlock_unlock(&s->mu);
    return hit;
}

static void cred_put(api_authcache_t *c, const char *name, const api_authcache_key_t *k,
                     uint64_t ticket, int64_t now_ms)
{
    struct cred_ctx x = {ticket, now_ms};
    uint32_t h;
    shard_t *s = shard_of(c->cred, name, &h);
    entry_t *e;

    /* Many requests may miss at once (a cold cache): one write is enough. */
    pthread_rwlock_rdlock(&s->mu);
    e = find(s, h, name);
    int fresh = e && e->gen == ticket && now_ms - e->stored_ms < API_AUTHCACHE_TTL_MS / 2;
    pthread_rwlock_unlock(&s->mu);
    if (fresh) return;
    pthread_rwlock_wrlock(&s->mu);
    /* checked under the lock: an invalidation bumps gen before anyone reads again */
    if (ticket && ticket == atomic_load(&c->gen) && (e = upsert(s, h, name, cred_fresh, &x))) {
        e->gen = ticket;
        e->stored_ms = now_ms;
        if (k) {
            e->key = *k;
            if (k->touched_ms > atomic_load(&e->touched_ms))
                atomic_store(&e->touched_ms, k->touched_ms);
        }
    }
    pthread_rwlock_unlock(&s->mu);
}

static void name_of(char *out, size_t n, char kind, const char *id)
{
    out[0] = kind;
    out[1] = ':';
    strncpy(out + 2, id, n - 3);
    out[n - 1] = '\0';
}

int api_authcache_session(api_authcache_t *c, const char *sid, int64_t now_ms)
{
    char name[API_SID_MAX + 3];
    name_of(name, sizeof(name), 's', sid);
    return cred_get(c, name, now_ms, NULL);
}

void api_authcache_session_put(api_authcache_t *c, const char *sid, uint64_t ticket,
                               int64_t now_ms)
{
    char name[API_SID_MAX + 3];
    name_of(name, sizeof(name), 's', sid);
    cred_put(c, name, NULL, ticket, now_ms);
}

int api_authcache_key(api_authcache_t *c, const char *sha, int64_t now_ms,
                      api_authcache_key_t *out)
{
    char name[72];
    name_of(name, sizeof(name), 'k', sha);
    return cred_get(c, name, now_ms, out);
}

void api_authcache_key_put(api_authcache_t *c, const char *sha, const api_authcache_key_t *k,
                           uint64_t ticket, int64_t now_ms)
{
    char name[72];
    name_of(name, sizeof(name), 'k', sha);
    cred_put(c, name, k, ticket, now_ms);
}

int api_authcache_key_touch(api_authcache_t *c, const char *sha, int64_t now_ms)
{
    char name[72];
    uint32_t h;
    shard_t *s;
    entry_t *e;
    int due = 1;

    name_of(name, sizeof(name), 'k', sha);
    s = shard_of(c->cred, name, &h);
    pthread_rwlock_rdlock(&s->mu);
    if ((e = find(s, h, name))) {
        int64_t last = atomic_load(&e->touched_ms);
        /* one thread wins the minute */
        due = now_ms - last >= 60000 &&
              atomic_compare_exchange_strong(&e->touched_ms, &last, now_ms);
    }
    pthread_rwlock_unlock(&s->mu);
    return due;
}

/* ---- counters -------------------------------------------------------------------- */

static int counter_live(const entry_t *e, const void *arg)
{
    int64_t now_ms = *(const int64_t *)arg;
    return atomic_load(&e->pending) || atomic_load(&e->inflight) ||
           now_ms < atomic_load(&e->reset_ms) + EXPIRED_KEEP_MS;
}

int api_authcache_count(api_authcache_t *c, const char *key, long long limit, int64_t now_ms,
                        long long *count, int64_t *reset_ms)
{
    uint32_t h;
    shard_t *s = shard_of(c->cnt, key, &h);
    entry_t *e;
    int local = 0;

    pthread_rwlock_rdlock(&s->mu);
    if ((e = find(s, h, key)) && now_ms < atomic_load(&e->reset_ms) - WINDOW_GUARD_MS) {
        long long p = atomic_load(&e->pending);
        for (;;) {
            long long base = atomic_load(&e->known) + atomic_load(&e->inflight);
            if (p >= API_AUTHCACHE_PENDING_MAX || base + p + 1 + API_AUTHCACHE_SLACK > limit)
                break;
            if (atomic_compare_exchange_weak(&e->pending, &p, p + 1)) {
                *count = base + p + 1;
                *reset_ms = atomic_load(&e->reset_ms);
                local = 1;
                break;
            }
        }
    }
    pthread_rwlock_unlock(&s->mu);
    return local;
}

/* Applies Redis's count and ttl to e: its count includes every flush it answered, so a
 * reply older than one already applied (same window, lower count) must not lower it. */
static void apply(entry_t *e, long long count, long long ttl_ms, int64_t now_ms)
{
    int64_t reset = now_ms + ttl_ms;
    long long known = atomic_load(&e->known);
    if (reset > atomic_load(&e->reset_ms) + 1000) {
        atomic_store(&e->known, count); /* a new window */
    } else {
        while (count > known && !atomic_compare_exchange_weak(&e->known, &known, count)) {}
    }
    atomic_store(&e->reset_ms, reset);
}

void api_authcache_count_sync(api_authcache_t *c, const char *key, long long count,
                              long long ttl_ms, int64_t now_ms)
{
    uint32_t h;
    shard_t *s = shard_of(c->cnt, key, &h);
    entry_t *e;

    pthread_rwlock_rdlock(&s->mu);
    if ((e = find(s, h, key))) apply(e, count, ttl_ms, now_ms);
    pthread_rwlock_unlock(&s->mu);
    if (e) return;
    pthread_rwlock_wrlock(&s->mu);
    if ((e = upsert(s, h, key, counter_live, &now_ms))) apply(e, count, ttl_ms, now_ms);
    pthread_rwlock_unlock(&s->mu);
}

int api_authcache_take(api_authcache_t *c, char (*keys)[API_AUTHCACHE_KEY_MAX], long long *n,
                       int max, int64_t now_ms)
{
    int got = 0;
    for (int i = 0; i < SHARDS && got < max; i++) {
        shard_t *s = &c->cnt[i];
        int dead = 0;
        pthread_rwlock_rdlock(&s->mu);
        for (int b = 0; b < BUCKETS && got < max; b++) {
            for (entry_t *e = s->b[b]; e && got < max; e = e->next) {
                long long p = atomic_exchange(&e->pending, 0);
                dead |= !p && !counter_live(e, &now_ms);
                if (!p) continue;
                atomic_fetch_add(&e->inflight, p);
                strncpy(keys[got], e->name, API_AUTHCACHE_KEY_MAX - 1);
                keys[got][API_AUTHCACHE_KEY_MAX - 1] = '\0';
                n[got++] = p;
            }
        }
        pthread_rwlock_unlock(&s->mu);
        if (dead) { /* exclusive only when there is something to drop: a writer
                     * descheduled while it holds the lock stalls every request of the
                     * shard */
            pthread_rwlock_wrlock(&s->mu);
            sweep(s, counter_live, &now_ms);
            pthread_rwlock_unlock(&s->mu);
        }
    }
    return got;
}

void api_authcache_flushed(api_authcache_t *c, const char *key, long long n, int ok,
                           long long count, long long ttl_ms, int64_t now_ms)
{
    uint32_t h;
    shard_t *s = shard_of(c->cnt, key, &h);
    entry_t *e;

    pthread_rwlock_rdlock(&s->mu);
    if ((e = find(s, h, key))) {
        if (!ok) {
            atomic_fetch_add(&e->pending, n); /* counted again next round: never under */
        } else {
            apply(e, count, ttl_ms, now_ms);
        }
        atomic_fetch_sub(&e->inflight, n);
    }
    pthread_rwlock_unlock(&s->mu);
}

long long api_authcache_take_one(api_authcache_t *c, const char *key)
{
    uint32_t h;
    shard_t *s = shard_of(c->cnt, key, &h);
    entry_t *e;
    long long p = 0;

    pthread_rwlock_rdlock(&s->mu);
    if ((e = find(s, h, key)) && (p = atomic_exchange(&e->pending, 0)))
        atomic_fetch_add(&e->inflight, p);
    pthread_rwlock_unlock(&s->mu);
    return p;
}
