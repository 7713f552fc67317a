/* tests/unit/api/test_jobs.c — listing cursors, POST /v1/jobs body validation, and the
 * 202 body of a new job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/jobs.h"
#include "common/config.h"

#define ID "job_0123456789ABCDEFGHIJkl"

static void test_cursor_round_trip(void **state)
{
    (void)state;
    const int64_t times[] = {1, 12, 123, 1234, 1700000000000LL, 1700000000001LL, INT64_MAX};
    char cur[API_CURSOR_MAX], id[Q_ID_SIZE];
    int64_t ms;
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        assert_int_equal(api_cursor_encode(times[i], ID, cur, sizeof(cur)), 0);
        for (const char *p = cur; *p; p++)
            assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789-_", *p));
        assert_int_equal(api_cursor_decode(cur, &ms, id), 0);
        assert_true(ms == times[i]);
        assert_string_equal(id, ID);
    }
    assert_int_equal(api_cursor_encode(1, ID, cur, 10), -1); /* does not fit */
}

static void test_cursor_rejects(void **state)
{
    (void)state;
    char id[Q_ID_SIZE], cur[API_CURSOR_MAX];
    int64_t ms = 5;
    /* base64url of "abc", "123:notanid", "0:job_...", "-5:job_...", "12:" */
    const char *bad[] = {"", "!!!!", "YWJj", "MTIzOm5vdGFuaWQ", "MTI6", "a", "abcde",
                         "MTIzOmpvYl8wMTIzNDU2Nzg5QUJDREVGR0hJSmts=",
                         "MTIzOmpvYl8wMTIzNDU2Nzg5QUJDREVGR0hJSmts+"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (api_cursor_decode(bad[i], &ms, id) != -1) fail_msg("accepted '%s'", bad[i]);
    assert_int_equal(api_cursor_encode(0, ID, cur, sizeof(cur)), 0);
    assert_int_equal(api_cursor_decode(cur, &ms, id), -1); /* time 0 is not a job's */
    assert_int_equal(api_cursor_encode(-5, ID, cur, sizeof(cur)), 0);
    assert_int_equal(api_cursor_decode(cur, &ms, id), -1);
    char longer[200];
    memset(longer, 'A', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    assert_int_equal(api_cursor_decode(longer, &ms, id), -1);
    assert_int_equal(ms, 5);
    assert_int_equal(api_cursor_decode("MTIzOmpvYl8wMTIzNDU2Nzg5QUJDREVGR0hJSmts", &ms, id), 0);
    assert_int_equal(ms, 123);
    assert_string_equal(id, ID);
}

static json_t *body; /* the last parsed body: spec borrows from it */

static int setup(void **state)
{
    char err[256];
    (void)state;
    return cm_config_load(err, sizeof(err));
}

static int teardown(void **state)
{
    (void)state;
    json_decref(body);
    cm_config_free();
    return 0;
}

#define NOW 1700000000000LL

/* Parses text; returns the result and leaves the field in field. */
static int parse(const char *text, api_job_spec_t *spec, char *field)
{
    char msg[256];
    json_error_t jerr;
    json_decref(body);
    body = json_loads(text, 0, &jerr);
    assert_non_null(body);
    field[0] = '\0';
    int rc = api_job_spec_parse(body, NOW, spec, field, 64, msg, sizeof(msg));
    if (rc == 0) assert_string_equal(field, "");
    else assert_true(msg[0] != '\0');
    return rc;
}

static void expect_field(const char *text, const char *want)
{
    api_job_spec_t spec;
    char field[64];
    if (parse(text, &spec, field) != -1) fail_msg("accepted %s", text);
    if (strcmp(field, want) != 0) fail_msg("%s: field '%s', expected '%s'", text, field, want);
}

static void test_spec_defaults(void **state)
{
    (void)state;
    api_job_spec_t spec;
    char field[64];
    assert_int_equal(parse("{\"type\":\"noop\"}", &spec, field), 0);
    assert_string_equal(spec.type, "noop");
    assert_string_equal(spec.queue, "default");
    assert_null(spec.input);
    assert_int_equal(spec.priority, 5);
    assert_int_equal(spec.max_attempts, cm_cfg.max_attempts);
    assert_int_equal(spec.timeout_ms, cm_cfg.job_timeout_ms);
    assert_true(spec.run_at_ms == 0);

    /* nulls are absent */
    assert_int_equal(parse("{\"type\":\"noop\",\"input\":null,\"queue\":null,\"priority\":null,"
                           "\"delaySeconds\":null,\"runAt\":null}",
                           &spec, field),
                     0);
}

static void test_spec_values(void **state)
{
    (void)state;
    api_job_spec_t spec;
    char field[64];
    assert_int_equal(parse("{\"type\":\"sleep\",\"input\":{\"ms\":10},\"queue\":\"Crit_1.x-y\","
                           "\"delaySeconds\":1.5,\"maxAttempts\":3,\"priority\":9,"
                           "\"timeoutSeconds\":20}",
                           &spec, field),
                     0);
    assert_string_equal(spec.queue, "Crit_1.x-y");
    assert_true(spec.run_at_ms == NOW + 1500);
    assert_int_equal(spec.max_attempts, 3);
    assert_int_equal(spec.priority, 9);
    assert_int_equal(spec.timeout_ms, 20000);
    assert_int_equal(json_integer_value(json_object_get(spec.input, "ms")), 10);

    assert_int_equal(parse("{\"type\":\"noop\",\"runAt\":\"2023-11-14T22:13:30Z\"}", &spec, field),
                     0);
    assert_true(spec.run_at_ms == NOW + 10000);
    assert_int_equal(parse("{\"type\":\"noop\",\"runAt\":\"2000-01-01T00:00:00Z\"}", &spec, field),
                     0);
    assert_true(spec.run_at_ms == 0); /* in the past: now */
    assert_int_equal(parse("{\"type\":\"noop\",\"delaySeconds\":0}", &spec, field), 0);
    assert_true(spec.run_at_ms == 0);
}

static void test_spec_errors(void **state)
{
    (void)state;
    expect_field("{}", "type");
    expect_field("{\"type\":5}", "type");
    expect_field("{\"type\":\"Noop\"}", "type");
    expect_field("{\"type\":\"nope\"}", "type");
    expect_field("{\"type\":\"noop\",\"extra\":1}", "extra");
    expect_field("{\"type\":\"noop\",\"input\":[]}", "input");
    expect_field("{\"type\":\"noop\",\"input\":\"x\"}", "input");
    expect_field("{\"type\":\"sleep\"}", "input.ms");
    expect_field("{\"type\":\"sleep\",\"input\":{\"ms\":\"10\"}}", "input.ms");
    expect_field("{\"type\":\"sleep\",\"input\":{\"ms\":10,\"x\":1}}", "input.x");
    expect_field("{\"type\":\"noop\",\"queue\":\"has space\"}", "queue");
    expect_field("{\"type\":\"noop\",\"queue\":7}", "queue");
    expect_field("{\"type\":\"noop\",\"queue\":\"\"}", "queue");
    expect_field("{\"type\":\"noop\",\"delaySeconds\":-1}", "delaySeconds");
    expect_field("{\"type\":\"noop\",\"delaySeconds\":31536001}", "delaySeconds");
    expect_field("{\"type\":\"noop\",\"delaySeconds\":\"5\"}", "delaySeconds");
    expect_field("{\"type\":\"noop\",\"runAt\":\"tomorrow\"}", "runAt");
    expect_field("{\"type\":\"noop\",\"runAt\":1700000000}", "runAt");
    expect_field("{\"type\":\"noop\",\"runAt\":\"2099-01-01T00:00:00Z\"}", "runAt");
    expect_field("{\"type\":\"noop\",\"delaySeconds\":1,\"runAt\":\"2023-11-14T22:13:30Z\"}",
                 "runAt");
    expect_field("{\"type\":\"noop\",\"maxAttempts\":0}", "maxAttempts");
    expect_field("{\"type\":\"noop\",\"maxAttempts\":1001}", "maxAttempts");
    expect_field("{\"type\":\"noop\",\"maxAttempts\":2.5}", "maxAttempts");
    expect_field("{\"type\":\"noop\",\"maxAttempts\":\"3\"}", "maxAttempts");
    expect_field("{\"type\":\"noop\",\"priority\":10}", "priority");
    expect_field("{\"type\":\"noop\",\"priority\":-1}", "priority");
    expect_field("{\"type\":\"noop\",\"priority\":true}", "priority");
    expect_field("{\"type\":\"noop\",\"timeoutSeconds\":0}", "timeoutSeconds");
    expect_field("{\"type\":\"noop\",\"timeoutSeconds\":86401}", "timeoutSeconds");
}

/* Renders job both ways: the direct renderer must write what the JSON tree gives. */
static void expect_same_render(q_job_t *job, const char *input_text)
{
    json_error_t err;
    json_t *input = input_text ? json_loads(input_text, 0, &err) : NULL;
    char *stored = input ? json_dumps(input, JSON_COMPACT) : NULL; /* as the record keeps it */
    char *shown = input ? json_dumps(input, API_RENDER_FLAGS) : NULL; /* as the api shows it */
    size_t shown_len = shown ? strlen(shown) : 0;
    char direct[4096], tree[4096];
    job->input = stored ? stored : "{}";
    json_t *j = q_job_to_json(job);
    size_t want = api_render(j, tree, sizeof(tree));
    size_t got = api_render_created(job, shown, shown_len, direct, sizeof(direct));
    json_decref(j);
    assert_true(want < sizeof(tree));
    tree[want] = '\0';
    assert_int_equal(got, want);
    direct[got] = '\0';
    assert_string_equal(direct, tree);
    /* any buffer too small (the input cut anywhere too): the length it needs, no byte
     * written past the end */
    for (size_t cap = 0; cap < want; cap++) {
        memset(direct, '#', sizeof(direct));
        assert_int_equal(api_render_created(job, shown, shown_len, direct, cap), want);
        assert_int_equal(direct[cap], '#');
    }
    free(stored);
    free(shown);
    json_decref(input);
}

static void test_render_created(void **state)
{
    (void)state;
    q_job_t job = {
        .id = ID,
        .type = "noop",
        .queue = "default",
        .status = "queued",
        .max_attempts = 3,
        .priority = 5,
        .created_ms = 1764860000123LL,
        .updated_ms = 1764860000123LL,
        .run_at_ms = 1764860000120LL,
    };
    expect_same_render(&job, NULL);
    expect_same_render(&job, "{}");
    expect_same_render(&job, "{\"ms\":250,\"note\":\"caf\u00e9 \\\"q\\\" \\\\ \\n / \\u0001\"}");
    expect_same_render(&job, "{\"price\":0.00003,\"x\":0.1,\"big\":1e300,\"neg\":-2.5,"
                             "\"list\":[1,2,{\"a\":null,\"b\":true}],\"z\":\"\xf0\x9f\x9a\x80\"}");
    job.type = "ai.chat-v2_x";
    job.queue = "Bulk.Low-1";
    job.status = "scheduled";
    job.priority = 0;
    job.max_attempts = 1000;
    job.run_at_ms = 1893456000000LL;
    job.idempotency_key = "order \"42\" \\ /x~";
    expect_same_render(&job, "{\"a\":1}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cursor_round_trip),
        cmocka_unit_test(test_cursor_rejects),
        cmocka_unit_test(test_spec_defaults),
        cmocka_unit_test(test_spec_values),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_render_created),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
