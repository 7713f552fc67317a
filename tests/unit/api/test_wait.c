/* tests/unit/api/test_wait.c — the long-poll registry without Redis: the cap, timeouts,
 * and closing (which must release every waiter at once). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <time.h>

#include "api/wait.h"
#include "common/log.h"
#include "common/util.h"

/* Nothing listens on port 1: the subscriber keeps retrying in the background. */
static api_waits_t *new_registry(int max)
{
    api_waits_t *w = api_waits_new("127.0.0.1", 1, 100, "t:ch:done", max, NULL, NULL, NULL);
    assert_non_null(w);
    return w;
}

static void test_cap_and_timeout(void **state)
{
    (void)state;
    api_waits_t *w = new_registry(2);
    api_waiter_t a, b, c;
    assert_int_equal(api_wait_begin(w, &a, "job_a"), 0);
    assert_int_equal(api_wait_begin(w, &b, "job_a"), 0);
    assert_int_equal(api_wait_begin(w, &c, "job_c"), -1); /* the cap */
    int64_t t0 = cm_mono_ms();
    assert_int_equal(api_wait(w, &a, 60), 0);
    int64_t took = cm_mono_ms() - t0;
    assert_true(took >= 55 && took < 1000);
    api_wait_end(w, &a);
    assert_int_equal(api_wait_begin(w, &c, "job_c"), 0); /* a slot is free again */
    api_wait_end(w, &b);
    api_wait_end(w, &c);
    api_waits_free(w);
}

static api_waits_t *shared;
static int registered; /* set by the waiter thread once it is registered */

static void *waiter_thread(void *arg)
{
    api_waiter_t wt;
    int *rc = arg;
    if (api_wait_begin(shared, &wt, "job_x") != 0) {
        *rc = -2;
        __atomic_store_n(&registered, 1, __ATOMIC_SEQ_CST);
        return NULL;
    }
    __atomic_store_n(&registered, 1, __ATOMIC_SEQ_CST);
    *rc = api_wait(shared, &wt, 10000);
    api_wait_end(shared, &wt);
    return NULL;
}

static void test_close_releases_waiters(void **state)
{
    (void)state;
    struct timespec tick = {0, 20000000};
    pthread_t th;
    int rc = 99;
    api_waiter_t late;
    shared = new_registry(4);
    assert_int_equal(pthread_create(&th, NULL, waiter_thread, &rc), 0);
    while (!__atomic_load_n(&registered, __ATOMIC_SEQ_CST)) nanosleep(&tick, NULL);
    nanosleep(&tick, NULL); /* let it block in api_wait */
    int64_t t0 = cm_mono_ms();
    api_waits_close(shared);
    pthread_join(th, NULL);
    assert_int_equal(rc, -1);
    assert_true(cm_mono_ms() - t0 < 2000);
    assert_int_equal(api_wait_begin(shared, &late, "job_y"), -1); /* closed */
    api_waits_free(shared);
}

int main(void)
{
    cm_log_level = CM_LOG_ERR - 1; /* the subscriber's retries are expected here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_and_timeout),
        cmocka_unit_test(test_close_releases_waiters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
