/* tests/unit/api/test_cache.c — the job answer cache without Redis: store and look up,
 * invalidation, the ticket race, clear/disable, the entry and byte bounds, the shapes of
 * __redis__:invalidate payloads, and readers racing an invalidating writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cache.h"

#define PREFIX "t:job:"
#define A "job_AAAAAAAAAAAAAAAAAAAAAA"
#define B "job_BBBBBBBBBBBBBBBBBBBBBB"
#define BIG ((size_t)1 << 20)
#define SUB 7 /* the subscriber's client id */

static api_cache_t *new_cache(int entries, size_t bytes)
{
    api_cache_t *c = api_cache_new(entries, bytes, PREFIX);
    assert_non_null(c);
    api_cache_enable(c, SUB);
    return c;
}

/* Stores body for id with a fresh ticket; returns what api_cache_put returned. */
static int put(api_cache_t *c, const char *id, const char *owner, int terminal,
               const char *body)
{
    api_cache_ticket_t t;
    assert_int_equal(api_cache_begin(c, id, SUB, &t), 0);
    return api_cache_put(c, &t, id, owner, terminal, body, strlen(body));
}

/* 1 if id is cached with exactly body. */
static int holds(api_cache_t *c, const char *id, const char *body)
{
    api_cache_hit_t hit;
    return api_cache_get(c, id, &hit) && hit.len == strlen(body) &&
           memcmp(hit.body, body, hit.len) == 0;
}

static void invalidate_id(api_cache_t *c, const char *id)
{
    char key[64];
    int n = snprintf(key, sizeof(key), PREFIX "%s", id);
    api_cache_invalidate(c, key, (size_t)n);
}

static void test_put_get(void **state)
{
    (void)state;
    api_cache_t *c = new_cache(16, BIG);
    api_cache_hit_t hit;

    assert_int_equal(put(c, A, "alice", 1, "{\"id\":\"a\"}"), 0);
    assert_int_equal(api_cache_get(c, A, &hit), 1);
    assert_string_equal(hit.owner, "alice");
    assert_int_equal(hit.terminal, 1);
    assert_int_equal(hit.len, 10);
    assert_memory_equal(hit.body, "{\"id\":\"a\"}", 10);
    assert_int_equal(api_cache_get(c, B, &hit), 0);

    assert_int_equal(put(c, A, NULL, 0, "{\"v\":2}"), 0); /* replaces */
    assert_int_equal(api_cache_get(c, A, &hit), 1);
    assert_string_equal(hit.owner, ""); /* no owner */
    assert_int_equal(hit.terminal, 0);
    assert_true(holds(c, A, "{\"v\":2}"));
    api_cache_free(c);
}

static void test_too_large(void **state)
{
    (void)state;
    api_cache_t *c = new_cache(16, BIG);
    char *body = malloc(API_CACHE_BODY_MAX + 2);
    memset(body, 'x', API_CACHE_BODY_MAX + 1);
    body[API_CACHE_BODY_MAX + 1] = '\0';
    assert_int_equal(put(c, A, "o", 0, body), -1);
    body[API_CACHE_BODY_MAX] = '\0'; /* the largest that fits */
    assert_int_equal(put(c, A, "o", 0, body), 0);
    assert_true(holds(c, A, body));
    free(body);
    api_cache_free(c);
}

static void test_invalidate(void **state)
{
    (void)state;
    api_cache_t *c = new_cache(16, BIG);
    assert_int_equal(put(c, A, "o", 0, "a"), 0);
    assert_int_equal(put(c, B, "o", 0, "b"), 0);

    api_cache_invalidate(c, "t:other:" A, strlen("t:other:" A)); /* not a job key */
    api_cache_invalidate(c, "t:job:", 6);
    api_cache_invalidate(c, "t:job:" A "x", strlen("t:job:" A "x")); /* another key */
    assert_true(holds(c, A, "a"));

    /* not NUL-terminated: only len bytes count */
    api_cache_invalidate(c, "t:job:" A "garbage", strlen("t:job:" A));
    assert_false(holds(c, A, "a"));
    assert_true(holds(c, B, "b"));
    api_cache_free(c);
}

/* The race the tickets exist for: read, invalidation handled, then the store. */
static void test_ticket_refused_after_invalidation(void **state)
{
    (void)state;
    api_cache_t *c = new_cache(16, BIG);
    api_cache_ticket_t t, u;

    assert_int_equal(api_cache_begin(c, A, SUB, &t), 0);
    assert_int_equal(api_cache_begin(c, B, SUB, &u), 0);
    invalidate_id(c, A); /* A changed after the reader noted its bucket */
    assert_int_equal(api_cache_put(c, &t, A, "o", 0, "old", 3), -1);
    assert_false(holds(c, A, "old"));
    assert_int_equal(api_cache_put(c, &u, B, "o", 0, "b", 1), 0); /* B's read is fine */
    assert_true(holds(c, B, "b"));

    /* an invalidation that comes after the store evicts it */
    api_cache_forget(c, B);
    assert_false(holds(c, B, "b"));
    api_cache_free(c);
}

static void test_clear(void **state)
{
    (void)state;
    api_cache_t *c = new_cache(16, BIG);
    api_cache_ticket_t t;

    assert_int_equal(put(c, A, "o", 0, "a"), 0);
    assert_int_equal(api_cache_begin(c, B, SUB, &t), 0);
    api_cache_clear(c);
    assert_false(holds(c, A, "a"));
    assert_int_equal(api_cache_put(c, &t, B, "o", 0, "b", 1), -1); /* read before the flush */
    assert_int_equal(put(c, B, "o", 0, "b"), 0);                    /* still enabled */
    assert_true(holds(c, B, "b"));
    api_cache_free(c);
}

static void test_disable(void **state)
{
    (void)state;
    api_cache_t *c = api_cache_new(16, BIG, PREFIX);
    api_cache_ticket_t t, u;

    assert_non_null(c);
    assert_int_equal(api_cache_begin(c, A, SUB, &t), -1); /* starts disabled */
    assert_int_equal(api_cache_put(c, &t, A, "o", 0, "a", 1), -1);
    api_cache_enable(c, SUB);
    assert_int_equal(put(c, A, "o", 0, "a"), 0);
    assert_int_equal(api_cache_begin(c, B, SUB, &u), 0);

    api_cache_disable(c);
    assert_false(holds(c, A, "a"));
    assert_int_equal(api_cache_begin(c, A, SUB, &t), -1);
    assert_int_equal(api_cache_put(c, &t, A, "o", 0, "a", 1), -1); /* a refused ticket */
    assert_int_equal(api_cache_put(c, &u, B, "o", 0, "b", 1), -1);
    assert_false(holds(c, A, "a"));

    api_cache_enable(c, SUB + 1); /* the subscriber is back, as another client */
    api_cache_enable(c, SUB + 1); /* idempotent */
    assert_false(holds(c, A, "a"));
    /* a ticket from before the outage stays refused */
    assert_int_equal(api_cache_put(c, &u, B, "o", 0, "b", 1), -1);
    /* a connection still redirected to the old subscriber gets no ticket */
    assert_int_equal(api_cache_begin(c, B, SUB, &t), -1);
    assert_int_equal(api_cache_begin(c, B, SUB + 1, &t), 0);
    assert_int_equal(api_cache_put(c, &t, B, "o", 0, "b", 1), 0);
    assert_true(holds(c, B, "b"));
    api_cache_free(c);
}

static void test_lru_entries(void **state)
{
    (void)state;
    api_cache_t *c = new_cache(4, BIG); /* small: one shard, exact LRU */
    char ids[6][Q_ID_SIZE];
    api_cache_hit_t hit;

    for (int i = 0; i < 6; i++) snprintf(ids[i], sizeof(ids[i]), "job_%022d", i);
    for (int i = 0; i < 4; i++) assert_int_equal(put(c, ids[i], "o", 0, ids[i]), 0);
    assert_int_equal(api_cache_get(c, ids[0], &hit), 1); /* 0 is now the newest */
    assert_int_equal(put(c, ids[4], "o", 0, ids[4]), 0);  /* evicts 1 */
    assert_int_equal(api_cache_get(c, ids[1], &hit), 0);
    assert_int_equal(put(c, ids[5], "o", 0, ids[5]), 0);  /* evicts 2 */
    assert_int_equal(api_cache_get(c, ids[2], &hit), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(api_cache_get(c, ids[i], &hit), i == 0 || i >= 3);
    api_cache_free(c);
}

static void test_lru_bytes(void **state)
{
    (void)state;
    /* room for two of the largest answers (and their headers), not three */
    api_cache_t *c = new_cache(64, 2 * API_CACHE_BODY_MAX + 2048);
    char *body = malloc(API_CACHE_BODY_MAX + 1);
    api_cache_hit_t hit;

    memset(body, 'x', API_CACHE_BODY_MAX);
    body[API_CACHE_BODY_MAX] = '\0';
    assert_int_equal(put(c, A, "o", 0, body), 0);
    assert_int_equal(put(c, B, "o", 0, body), 0);
    assert_int_equal(api_cache_get(c, A, &hit), 1);
    assert_int_equal(put(c, "job_CCCCCCCCCCCCCCCCCCCCCC", "o", 0, body), 0); /* evicts B */
    assert_int_equal(api_cache_get(c, B, &hit), 0);
    assert_int_equal(api_cache_get(c, A, &hit), 1);
    assert_int_equal(put(c, B, "o", 0, "small"), 0); /* small ones still fit */
    assert_int_equal(api_cache_get(c, A, &hit), 1);
    free(body);
    api_cache_free(c);
}

static void test_bad_sizes(void **state)
{
    (void)state;
    assert_null(api_cache_new(0, BIG, PREFIX));
    assert_null(api_cache_new(16, API_CACHE_BODY_MAX, PREFIX)); /* not one largest answer */
    /* 64 shards need 64 largest answers' worth of bytes */
    assert_null(api_cache_new(API_CACHE_ENTRIES, 32 * API_CACHE_BODY_MAX, PREFIX));
    api_cache_t *c = api_cache_new(API_CACHE_ENTRIES, API_CACHE_BYTES, PREFIX);
    assert_non_null(c);
    assert_string_equal(api_cache_key_prefix(c), PREFIX);
    api_cache_free(c);
    api_cache_free(NULL);
}

/* ---- payload shapes (as hiredis gives them; see wait.c) ---------------------------- */

static redisReply str_reply(const char *s)
{
    return (redisReply){.type = REDIS_REPLY_STRING, .str = (char *)s, .len = strlen(s)};
}

static void test_payloads(void **state)
{
    (void)state;
    api_cache_t *c = new_cache(16, BIG);
    redisReply ka = str_reply(PREFIX A), kb = str_reply(PREFIX B), other = str_reply("t:x");
    redisReply num = {.type = REDIS_REPLY_INTEGER, .integer = 1};
    redisReply nil = {.type = REDIS_REPLY_NIL};
    redisReply *two[] = {&other, &ka}, *odd[] = {&kb, &num};
    redisReply arr = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = two};
    redisReply bad = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = odd};

    assert_int_equal(put(c, A, "o", 0, "a"), 0);
    assert_int_equal(put(c, B, "o", 0, "b"), 0);
    api_cache_on_invalidate(c, &arr); /* an array of keys */
    assert_false(holds(c, A, "a"));
    assert_true(holds(c, B, "b"));
    api_cache_on_invalidate(c, &kb); /* one key as a string */
    assert_false(holds(c, B, "b"));

    assert_int_equal(put(c, A, "o", 0, "a"), 0);
    assert_int_equal(put(c, B, "o", 0, "b"), 0);
    api_cache_on_invalidate(c, &nil); /* FLUSHALL */
    assert_false(holds(c, A, "a"));
    assert_false(holds(c, B, "b"));

    assert_int_equal(put(c, A, "o", 0, "a"), 0);
    api_cache_on_invalidate(c, &bad); /* unreadable: everything goes */
    assert_false(holds(c, A, "a"));
    api_cache_free(c);
}

/* ---- readers racing a writer -------------------------------------------------------- */

#define KEYS 8
#define WRITES 20000
#define READERS 4

typedef struct race {
    api_cache_t *cache;
    _Atomic long version[KEYS]; /* "Redis": the current version of each job */
    atomic_int stop;
    char ids[KEYS][Q_ID_SIZE];
} race_t;

/* A GET that misses: ticket, read "Redis", store what it read. */
static void *on_reader(void *arg)
{
    race_t *r = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    while (!atomic_load(&r->stop)) {
        int k = (int)(rand_r(&seed) % KEYS);
        api_cache_ticket_t t;
        char body[32];
        if (api_cache_begin(r->cache, r->ids[k], SUB, &t) != 0) continue;
        int n = snprintf(body, sizeof(body), "%ld", atomic_load(&r->version[k]));
        api_cache_put(r->cache, &t, r->ids[k], "o", 0, body, (size_t)n);
    }
    return NULL;
}

static long version_of(const api_cache_hit_t *hit)
{
    char s[32];
    snprintf(s, sizeof(s), "%.*s", (int)hit->len, hit->body);
    return atol(s);
}

/* The writer changes a job, then its invalidation is handled: from then on the cache
 * must never answer an older version. */
static void test_race(void **state)
{
    (void)state;
    race_t r = {.cache = new_cache(1024, BIG)};
    pthread_t th[READERS];
    api_cache_hit_t hit;
    long stale = 0;

    for (int k = 0; k < KEYS; k++) snprintf(r.ids[k], Q_ID_SIZE, "job_%022d", k);
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, on_reader, &r), 0);
    for (int w = 0; w < WRITES; w++) {
        int k = w % KEYS;
        long v = atomic_fetch_add(&r.version[k], 1) + 1;
        invalidate_id(r.cache, r.ids[k]);
        for (int i = 0; i < 3; i++)
            if (api_cache_get(r.cache, r.ids[k], &hit) && version_of(&hit) < v) stale++;
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < READERS; i++) pthread_join(th[i], NULL);
    assert_int_equal(stale, 0);
    api_cache_free(r.cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_invalidate),
        cmocka_unit_test(test_ticket_refused_after_invalidation),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_disable),
        cmocka_unit_test(test_lru_entries),
        cmocka_unit_test(test_lru_bytes),
        cmocka_unit_test(test_bad_sizes),
        cmocka_unit_test(test_payloads),
        cmocka_unit_test(test_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
