/* workers/types_basic.c — noop, sleep and fail: job types for tests and benchmarks. */
#include <stdio.h>
#include <stdlib.h>

#include "workers/types.h"

#define SLEEP_MAX_MS 3600000
#define FAIL_MAX_TIMES 1000

/* ---- noop: succeeds at once with {} ------------------------------------------------ */

static void noop_start(wk_job_t *job) { wk_job_succeed(job, json_object()); }

const wk_type_t wk_type_noop = {.name = "noop", .start = noop_start};

/* ---- sleep: {"ms":N} waits N ms (progress 50% half way); honours cancel ------------ */

struct sleep {
    uv_timer_t timer;
    wk_job_t *job;
    uint64_t ms;
    int halfway; /* the first half has elapsed */
};

static int sleep_validate(const json_t *input, char *field, size_t flen, char *msg,
                          size_t mlen)
{
    static const char *const keys[] = {"ms", NULL};
    json_int_t ms;
    if (wk_input_only(input, keys, field, flen, msg, mlen)) return -1;
    return wk_input_int(input, "ms", 1, 0, SLEEP_MAX_MS, &ms, field, flen, msg, mlen);
}

static void sleep_closed(uv_handle_t *h) { free(h->data); }

/* Detaches the state from its job and frees it once the loop has closed the timer. */
static void sleep_end(struct sleep *s)
{
    wk_job_set_data(s->job, NULL);
    uv_close((uv_handle_t *)&s->timer, sleep_closed);
}

static void sleep_tick(uv_timer_t *t)
{
    struct sleep *s = t->data;
    wk_job_t *job = s->job;

    if (!s->halfway) {
        s->halfway = 1;
        wk_job_progress(job, 50, "half way");
        uv_timer_start(&s->timer, sleep_tick, s->ms - s->ms / 2, 0);
        return;
    }
    sleep_end(s);
    wk_job_succeed(job, json_pack("{s:I}", "sleptMs", (json_int_t)s->ms));
}

static void sleep_start(wk_job_t *job)
{
    struct sleep *s = calloc(1, sizeof(*s));
    if (!s) {
        wk_job_fail(job, "OUT_OF_MEMORY", "worker out of memory", 1, -1);
        return;
    }
    s->job = job;
    s->ms = (uint64_t)json_integer_value(json_object_get(wk_job_input(job), "ms"));
    uv_timer_init(wk_job_loop(job), &s->timer);
    s->timer.data = s;
    wk_job_set_data(job, s);
    uv_timer_start(&s->timer, sleep_tick, s->ms / 2, 0);
}

static void sleep_cancel(wk_job_t *job)
{
    sleep_end(wk_job_data(job));
    wk_job_canceled(job);
}

const wk_type_t wk_type_sleep = {
    .name = "sleep", .validate = sleep_validate, .start = sleep_start, .cancel = sleep_cancel};

/* ---- fail: {"times":N,"retryable":B} fails attempts 1..N, then succeeds ------------- */

static int fail_validate(const json_t *input, char *field, size_t flen, char *msg,
                         size_t mlen)
{
    static const char *const keys[] = {"times", "retryable", NULL};
    json_int_t times;
    int retryable;
    if (wk_input_only(input, keys, field, flen, msg, mlen) ||
        wk_input_int(input, "times", 1, 0, FAIL_MAX_TIMES, &times, field, flen, msg, mlen))
        return -1;
    return wk_input_bool(input, "retryable", &retryable, field, flen, msg, mlen);
}

static void fail_start(wk_job_t *job)
{
    const json_t *in = wk_job_input(job);
    json_int_t times = json_integer_value(json_object_get(in, "times"));
    const json_t *retryable = json_object_get(in, "retryable");
    int attempt = wk_job_attempt(job);
    char msg[96];

    if (attempt > times) {
        wk_job_succeed(job, json_pack("{s:i}", "attempts", attempt));
        return;
    }
    snprintf(msg, sizeof(msg), "injected failure %d of %" JSON_INTEGER_FORMAT, attempt, times);
    wk_job_fail(job, "INJECTED_FAILURE", msg, !json_is_false(retryable), -1);
}

const wk_type_t wk_type_fail = {.name = "fail", .validate = fail_validate, .start = fail_start};
