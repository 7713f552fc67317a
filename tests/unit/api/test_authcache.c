/* tests/unit/api/test_authcache.c — what the gate may know without Redis. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "api/authcache.h"

/* Nothing is known while disabled; a store with a ticket taken while disabled is refused. */
static void test_disabled_knows_nothing(void **state)
{
    (void)state;
    api_authcache_t *c = api_authcache_new();
    uint64_t t = api_authcache_ticket(c);
    assert_int_equal(t, 0);
    api_authcache_session_put(c, "ses_1", t, 1000);
    api_authcache_enable(c);
    assert_int_equal(api_authcache_session(c, "ses_1", 1000), 0);
    t = api_authcache_ticket(c);
    api_authcache_session_put(c, "ses_1", t, 1000);
    assert_int_equal(api_authcache_session(c, "ses_1", 1001), 1);
    assert_int_equal(api_authcache_session(c, "ses_2", 1001), 0);
    api_authcache_disable(c);
    assert_int_equal(api_authcache_session(c, "ses_1", 1002), 0);
    api_authcache_free(c);
}

/* A revocation forgets everything, and a read that raced it cannot be stored. */
static void test_invalidation_and_race(void **state)
{
    (void)state;
    api_authcache_t *c = api_authcache_new();
    api_authcache_key_t k = {.id = "key_1", .user = "usr_1", .role = API_ROLE_ADMIN}, got;
    api_authcache_enable(c);
    uint64_t t = api_authcache_ticket(c);
    api_authcache_key_put(c, "abc", &k, t, 5000);
    assert_int_equal(api_authcache_key(c, "abc", 5001, &got), 1);
    assert_string_equal(got.user, "usr_1");
    assert_int_equal(got.role, API_ROLE_ADMIN);
    /* a reader takes its ticket, a revocation is heard, then the reader stores */
    t = api_authcache_ticket(c);
    api_authcache_invalidate(c);
    assert_int_equal(api_authcache_key(c, "abc", 5002, &got), 0);
    api_authcache_key_put(c, "abc", &k, t, 5003);
    assert_int_equal(api_authcache_key(c, "abc", 5004, &got), 0);
    /* a fresh ticket stores; the entry ages out after the TTL */
    api_authcache_key_put(c, "abc", &k, api_authcache_ticket(c), 6000);
    assert_int_equal(api_authcache_key(c, "abc", 6000 + API_AUTHCACHE_TTL_MS - 1, &got), 1);
    assert_int_equal(api_authcache_key(c, "abc", 6000 + API_AUTHCACHE_TTL_MS, &got), 0);
    /* sessions and keys do not share names */
    api_authcache_session_put(c, "xyz", api_authcache_ticket(c), 7000);
    assert_int_equal(api_authcache_session(c, "xyz", 7001), 1);
    assert_int_equal(api_authcache_key(c, "xyz", 7001, &got), 0);
    api_authcache_free(c);
}

static void test_touch_once_a_minute(void **state)
{
    (void)state;
    api_authcache_t *c = api_authcache_new();
    api_authcache_key_t k = {.id = "key_1", .user = "usr_1", .touched_ms = 10000};
    api_authcache_enable(c);
    api_authcache_key_put(c, "abc", &k, api_authcache_ticket(c), 10000);
    assert_int_equal(api_authcache_key_touch(c, "abc", 20000), 0);
    assert_int_equal(api_authcache_key_touch(c, "abc", 70000), 1);
    assert_int_equal(api_authcache_key_touch(c, "abc", 70001), 0);
    api_authcache_free(c);
}

/* Near the limit nothing is counted locally; far from it, up to PENDING_MAX requests
 * are, and they are handed to the flusher exactly once. */
static void test_counting(void **state)
{
    (void)state;
    api_authcache_t *c = api_authcache_new();
    char keys[4][API_AUTHCACHE_KEY_MAX];
    long long n[4], count;
    int64_t reset;
    long long limit = API_AUTHCACHE_SLACK + 10 * API_AUTHCACHE_PENDING_MAX;

    /* unknown bucket: Redis first */
    assert_int_equal(api_authcache_count(c, "rl:user:u", limit, 0, &count, &reset), 0);
    api_authcache_count_sync(c, "rl:user:u", 1, 60000, 0);
    for (int i = 0; i < API_AUTHCACHE_PENDING_MAX; i++) {
        assert_int_equal(api_authcache_count(c, "rl:user:u", limit, 10, &count, &reset), 1);
        assert_int_equal(count, 2 + i);
        assert_int_equal(reset, 60000);
    }
    /* pending at its cap: Redis again */
    assert_int_equal(api_authcache_count(c, "rl:user:u", limit, 10, &count, &reset), 0);
    assert_int_equal(api_authcache_take(c, keys, n, 4, 20), 1);
    assert_string_equal(keys[0], "rl:user:u");
    assert_int_equal(n[0], API_AUTHCACHE_PENDING_MAX);
    assert_int_equal(api_authcache_take(c, keys, n, 4, 20), 0); /* in flight, not twice */
    /* a failed flush puts them back */
    api_authcache_flushed(c, "rl:user:u", n[0], 0, 0, 0, 30);
    assert_int_equal(api_authcache_take(c, keys, n, 4, 40), 1);
    api_authcache_flushed(c, "rl:user:u", n[0], 1, 1 + API_AUTHCACHE_PENDING_MAX, 59000, 1000);
    assert_int_equal(api_authcache_count(c, "rl:user:u", limit, 1000, &count, &reset), 1);
    assert_int_equal(count, 2 + API_AUTHCACHE_PENDING_MAX);

    /* a small limit: always Redis */
    api_authcache_count_sync(c, "rl:user:v", 1, 60000, 0);
    assert_int_equal(api_authcache_count(c, "rl:user:v", 100, 10, &count, &reset), 0);
    /* close to the limit (within the slack): Redis */
    api_authcache_count_sync(c, "rl:user:w", limit - API_AUTHCACHE_SLACK, 60000, 0);
    assert_int_equal(api_authcache_count(c, "rl:user:w", limit, 10, &count, &reset), 0);
    /* near the window's end: Redis */
    api_authcache_count_sync(c, "rl:user:x", 1, 60000, 0);
    assert_int_equal(api_authcache_count(c, "rl:user:x", limit, 59950, &count, &reset), 0);
    /* an older, lower answer of the same window does not lower the count */
    api_authcache_count_sync(c, "rl:user:x", 50, 60000, 0);
    api_authcache_count_sync(c, "rl:user:x", 40, 59990, 10);
    assert_int_equal(api_authcache_count(c, "rl:user:x", limit, 20, &count, &reset), 1);
    assert_int_equal(count, 51);
    /* a new window (its end well after the old one) starts from Redis's count */
    api_authcache_count_sync(c, "rl:user:x", 3, 60000, 70000);
    assert_int_equal(api_authcache_count(c, "rl:user:x", limit, 70001, &count, &reset), 1);
    assert_int_equal(count, 1 + 3 + 1); /* the pending one from before, 3, this one */
    api_authcache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disabled_knows_nothing),
        cmocka_unit_test(test_invalidation_and_race),
        cmocka_unit_test(test_touch_once_a_minute),
        cmocka_unit_test(test_counting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
