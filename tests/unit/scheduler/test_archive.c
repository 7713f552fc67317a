/* tests/unit/scheduler/test_archive.c — the archive upsert built from job snapshots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* after the four above, which it needs */
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "scheduler/archive.h"

#define ID1 "job_0123456789abcdefghijkl"
#define ID2 "job_ABCDEFGHIJKLMNOPQRSTUV"
#define NOW 1700000000000LL /* 2023-11-14T22:13:20.000Z */

/* A complete succeeded job; strings are literals (never freed). */
static q_job_t full_job(const char *id)
{
    q_job_t j = {0};
    snprintf(j.id, sizeof(j.id), "%s", id);
    j.type = "noop";
    j.queue = "default";
    j.owner = "usr_1";
    j.status = "succeeded";
    j.input = "{\"a\":1}";
    j.result = "{\"ok\":true}";
    j.history = "[{\"attempt\":1}]";
    j.progress_message = "done";
    j.idempotency_key = "key-1";
    j.attempt = 1;
    j.max_attempts = 25;
    j.priority = 7;
    j.progress = 100;
    j.timeout_ms = 3000;
    j.created_ms = NOW - 5000;
    j.run_at_ms = NOW - 5000;
    j.started_ms = NOW - 4000;
    j.finished_ms = NOW - 1000;
    j.updated_ms = NOW - 1000;
    return j;
}

/* Position of column name in the statement's column list, or -1. Ties the values to the
 * column list the statement itself declares. */
static int col(const char *sql, const char *name)
{
    const char *p = strchr(sql, '('), *end = strchr(sql, ')');
    size_t len = strlen(name);
    int i = 0;

    assert_non_null(p);
    assert_non_null(end);
    for (p++; p < end; i++) {
        while (*p == ' ')
            p++;
        if (strncmp(p, name, len) == 0 && (p[len] == ',' || p[len] == ')')) return i;
        p = strchr(p, ',');
        if (!p || p > end) break;
        p++;
    }
    return -1;
}

/* The value of column name in row r. */
static const char *val(const sch_upsert_t *u, int r, const char *name)
{
    int c = col(u->sql, name);
    assert_true(c >= 0);
    return u->values[r * SCH_UPSERT_COLS + c];
}

static void test_statement_shape(void **state)
{
    (void)state;
    q_job_t a = full_job(ID1), b = full_job(ID2);
    q_job_t *jobs[] = {&a, &b};
    sch_upsert_t u;
    char last[16];

    assert_int_equal(sch_upsert_build(&u, jobs, 2, NOW), 0);
    assert_int_equal(u.nparams, 2 * SCH_UPSERT_COLS);
    assert_non_null(strstr(u.sql, "INSERT INTO jobs (id, type, queue, owner, status, "));
    assert_non_null(strstr(u.sql, ") VALUES ($1,$2,"));
    snprintf(last, sizeof(last), ",$%d)", 2 * SCH_UPSERT_COLS);
    assert_non_null(strstr(u.sql, last));
    snprintf(last, sizeof(last), "$%d", 2 * SCH_UPSERT_COLS + 1);
    assert_null(strstr(u.sql, last));
    snprintf(last, sizeof(last), "),($%d,", SCH_UPSERT_COLS + 1);
    assert_non_null(strstr(u.sql, last));
    /* every column but id is updated on conflict */
    assert_non_null(strstr(u.sql, " ON CONFLICT (id) DO UPDATE SET type = EXCLUDED.type, "));
    assert_non_null(strstr(u.sql, "updated_at = EXCLUDED.updated_at, archived_at = now()"));
    /* an older snapshot never overwrites a newer row */
    assert_non_null(strstr(u.sql, "archived_at = now() WHERE jobs.updated_at <= EXCLUDED.updated_at"));
    assert_null(strstr(u.sql, "id = EXCLUDED.id"));
    assert_int_equal(col(u.sql, "id"), 0);
    assert_true(col(u.sql, "updated_at") == SCH_UPSERT_COLS - 1);
    assert_true(col(u.sql, "archived_at") < 0); /* the default now() on insert */
    sch_upsert_clear(&u);
    assert_null(u.sql);
    assert_null(u.values);
}

static void test_values_full_job(void **state)
{
    (void)state;
    q_job_t a = full_job(ID1), b = full_job(ID2);
    q_job_t *jobs[] = {&a, &b};
    sch_upsert_t u;

    b.status = "dead";
    b.error = "{\"code\":\"X\",\"message\":\"m\",\"retryable\":false}";
    b.cancel_requested = 1;
    assert_int_equal(sch_upsert_build(&u, jobs, 2, NOW), 0);
    assert_string_equal(val(&u, 0, "id"), ID1);
    assert_string_equal(val(&u, 1, "id"), ID2);
    assert_string_equal(val(&u, 0, "type"), "noop");
    assert_string_equal(val(&u, 0, "queue"), "default");
    assert_string_equal(val(&u, 0, "owner"), "usr_1");
    assert_string_equal(val(&u, 0, "status"), "succeeded");
    assert_string_equal(val(&u, 1, "status"), "dead");
    assert_string_equal(val(&u, 0, "attempt"), "1");
    assert_string_equal(val(&u, 0, "max_attempts"), "25");
    assert_string_equal(val(&u, 0, "priority"), "7");
    assert_string_equal(val(&u, 0, "timeout_ms"), "3000");
    assert_string_equal(val(&u, 0, "progress"), "100");
    assert_string_equal(val(&u, 0, "input"), "{\"a\":1}");
    assert_string_equal(val(&u, 0, "result"), "{\"ok\":true}");
    assert_null(val(&u, 0, "error"));
    assert_string_equal(val(&u, 1, "error"), b.error);
    assert_string_equal(val(&u, 0, "history"), "[{\"attempt\":1}]");
    assert_string_equal(val(&u, 0, "progress_message"), "done");
    assert_string_equal(val(&u, 0, "idempotency_key"), "key-1");
    assert_string_equal(val(&u, 0, "cancel_requested"), "false");
    assert_string_equal(val(&u, 1, "cancel_requested"), "true");
    assert_string_equal(val(&u, 0, "created_at"), "2023-11-14T22:13:15.000Z");
    assert_string_equal(val(&u, 0, "run_at"), "2023-11-14T22:13:15.000Z");
    assert_string_equal(val(&u, 0, "started_at"), "2023-11-14T22:13:16.000Z");
    assert_string_equal(val(&u, 0, "finished_at"), "2023-11-14T22:13:19.000Z");
    assert_string_equal(val(&u, 0, "updated_at"), "2023-11-14T22:13:19.000Z");
    sch_upsert_clear(&u);
}

/* A dead record whose hash lost its rec: no type/queue/owner/input, few times. */
static void test_missing_fields(void **state)
{
    (void)state;
    q_job_t j = {0};
    q_job_t *jobs[] = {&j};
    sch_upsert_t u;

    snprintf(j.id, sizeof(j.id), "%s", ID1);
    j.status = "dead";
    j.error = "{\"code\":\"CORRUPT_RECORD\",\"message\":\"bad msgpack\"}";
    j.updated_ms = NOW;
    assert_int_equal(sch_upsert_build(&u, jobs, 1, NOW + 99), 0);
    assert_string_equal(val(&u, 0, "type"), "unknown");
    assert_string_equal(val(&u, 0, "queue"), "unknown");
    assert_string_equal(val(&u, 0, "owner"), "unknown");
    assert_string_equal(val(&u, 0, "error"), j.error);
    assert_null(val(&u, 0, "input"));
    assert_null(val(&u, 0, "result"));
    assert_null(val(&u, 0, "history"));
    assert_null(val(&u, 0, "progress_message"));
    assert_null(val(&u, 0, "idempotency_key"));
    assert_null(val(&u, 0, "run_at"));
    assert_null(val(&u, 0, "started_at"));
    assert_null(val(&u, 0, "finished_at"));
    /* NOT NULL times: created falls back to updated */
    assert_string_equal(val(&u, 0, "created_at"), "2023-11-14T22:13:20.000Z");
    assert_string_equal(val(&u, 0, "updated_at"), "2023-11-14T22:13:20.000Z");
    assert_string_equal(val(&u, 0, "attempt"), "0");
    sch_upsert_clear(&u);

    j.updated_ms = 0; /* no time at all: now */
    assert_int_equal(sch_upsert_build(&u, jobs, 1, NOW + 1), 0);
    assert_string_equal(val(&u, 0, "created_at"), "2023-11-14T22:13:20.001Z");
    assert_string_equal(val(&u, 0, "updated_at"), "2023-11-14T22:13:20.001Z");
    sch_upsert_clear(&u);
}

static void test_json_guard(void **state)
{
    (void)state;
    q_job_t j = full_job(ID1);
    q_job_t *jobs[] = {&j};
    sch_upsert_t u;

    j.status = "failed";
    j.input = "{\"a\":";                              /* truncated */
    j.result = "[1, 123456789012345678901234567890]"; /* valid; jsonb takes big numbers */
    j.error = "not json";
    j.history = "[\"\\u0000\"]"; /* jsonb refuses \u0000 */
    assert_int_equal(sch_upsert_build(&u, jobs, 1, NOW), 0);
    assert_null(val(&u, 0, "input"));
    assert_string_equal(val(&u, 0, "result"), j.result);
    assert_string_equal(val(&u, 0, "error"), SCH_CORRUPT_ERROR);
    assert_null(val(&u, 0, "history"));
    sch_upsert_clear(&u);

    j.input = "\"\xff\xfe\""; /* a JSON string that is not UTF-8 */
    j.error = "{\"code\":\"E\"}";
    assert_int_equal(sch_upsert_build(&u, jobs, 1, NOW), 0);
    assert_null(val(&u, 0, "input"));
    assert_string_equal(val(&u, 0, "error"), "{\"code\":\"E\"}");
    sch_upsert_clear(&u);
}

static void test_text_and_range_guards(void **state)
{
    (void)state;
    q_job_t j = full_job(ID1);
    q_job_t *jobs[] = {&j};
    sch_upsert_t u;

    j.owner = "usr_\xc3"; /* truncated UTF-8 sequence */
    j.progress_message = "50 \xff";
    j.type = "caf\xc3\xa9"; /* valid UTF-8 stays */
    j.priority = 42;
    j.progress = -5;
    j.attempt = -1;
    j.run_at_ms = -1;
    j.started_ms = 253402300800000LL; /* year 10000 */
    assert_int_equal(sch_upsert_build(&u, jobs, 1, NOW), 0);
    assert_string_equal(val(&u, 0, "owner"), "unknown");
    assert_null(val(&u, 0, "progress_message"));
    assert_string_equal(val(&u, 0, "type"), "caf\xc3\xa9");
    assert_string_equal(val(&u, 0, "priority"), "9");
    assert_string_equal(val(&u, 0, "progress"), "0");
    assert_string_equal(val(&u, 0, "attempt"), "0");
    assert_null(val(&u, 0, "run_at"));
    assert_null(val(&u, 0, "started_at"));
    sch_upsert_clear(&u);
}

static void test_bad_counts(void **state)
{
    (void)state;
    q_job_t j = full_job(ID1);
    q_job_t *jobs[] = {&j};
    sch_upsert_t u;

    assert_int_equal(sch_upsert_build(&u, jobs, 0, NOW), Q_EINVAL);
    assert_null(u.sql);
    assert_int_equal(sch_upsert_build(&u, jobs, SCH_UPSERT_ROWS_MAX + 1, NOW), Q_EINVAL);
    assert_null(u.values);
    /* the largest batch stays within libpq's 65535 parameters */
    assert_true(SCH_UPSERT_ROWS_MAX * SCH_UPSERT_COLS <= 65535);
}

static void test_archivable(void **state)
{
    (void)state;
    q_job_t j = full_job(ID1);
    char *yes[] = {"succeeded", "failed", "dead", "canceled"};
    char *no[] = {"queued", "scheduled", "running", "bogus", ""};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        j.status = yes[i];
        assert_true(sch_archivable(&j));
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        j.status = no[i];
        assert_false(sch_archivable(&j));
    }
    j.status = NULL;
    assert_false(sch_archivable(&j));
    j.status = "succeeded";
    snprintf(j.id, sizeof(j.id), "job_short");
    assert_false(sch_archivable(&j));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statement_shape),
        cmocka_unit_test(test_values_full_job),
        cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_json_guard),
        cmocka_unit_test(test_text_and_range_guards),
        cmocka_unit_test(test_bad_counts),
        cmocka_unit_test(test_archivable),
    };
    cm_log_init("test", "error"); /* the guards log warnings on purpose */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
