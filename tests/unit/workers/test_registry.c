/* tests/unit/workers/test_registry.c — job types: lookup, input validation, defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/config.h"
#include "workers/registry.h"

/* Validates the JSON text in (NULL: absent input) for type; returns the result and leaves
 * the field and message in the globals below. */
static char field[64], msg[128];

static int check(const char *type, const char *in)
{
    const wk_type_t *t = wk_type_find(type);
    json_t *input = NULL;
    int rc;

    assert_non_null(t);
    if (in) {
        input = json_loads(in, JSON_DECODE_ANY, NULL);
        assert_non_null(input);
    }
    rc = wk_type_validate(t, input, field, sizeof(field), msg, sizeof(msg));
    json_decref(input);
    return rc;
}

static void expect_invalid(const char *type, const char *in, const char *want_field,
                           const char *want_msg)
{
    assert_int_equal(check(type, in), -1);
    assert_string_equal(field, want_field);
    if (want_msg) assert_string_equal(msg, want_msg);
}

static void test_find(void **state)
{
    (void)state;
    assert_string_equal(wk_type_find("noop")->name, "noop");
    assert_string_equal(wk_type_find("sleep")->name, "sleep");
    assert_string_equal(wk_type_find("fail")->name, "fail");
    assert_null(wk_type_find("nope"));
    assert_null(wk_type_find("NOOP"));
    assert_null(wk_type_find(""));
    assert_null(wk_type_find(NULL));
}

static void test_names(void **state)
{
    char out[64], tiny[6];
    (void)state;
    wk_type_names(out, sizeof(out));
    assert_string_equal(out, "ai.chat, fail, noop, sleep");
    wk_type_names(tiny, sizeof(tiny));
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1); /* truncated, still terminated */
}

static void test_noop(void **state)
{
    (void)state;
    assert_int_equal(check("noop", "{}"), 0);
    assert_int_equal(check("noop", "{\"anything\":[1,2]}"), 0);
    assert_int_equal(check("noop", NULL), 0);
    expect_invalid("noop", "[]", "input", "must be an object");
    expect_invalid("noop", "42", "input", "must be an object");
}

static void test_sleep(void **state)
{
    static const char *range = "must be an integer between 0 and 3600000";
    (void)state;
    assert_int_equal(check("sleep", "{\"ms\":0}"), 0);
    assert_int_equal(check("sleep", "{\"ms\":250}"), 0);
    assert_int_equal(check("sleep", "{\"ms\":3600000}"), 0);
    expect_invalid("sleep", "{\"ms\":-1}", "input.ms", range);
    expect_invalid("sleep", "{\"ms\":3600001}", "input.ms", range);
    expect_invalid("sleep", "{\"ms\":1.5}", "input.ms", range);
    expect_invalid("sleep", "{\"ms\":\"100\"}", "input.ms", range);
    expect_invalid("sleep", "{\"ms\":null}", "input.ms", range);
    expect_invalid("sleep", "{\"ms\":true}", "input.ms", range);
    expect_invalid("sleep", "{}", "input.ms", "is required");
    expect_invalid("sleep", NULL, "input.ms", "is required");
    expect_invalid("sleep", "{\"ms\":5,\"msec\":5}", "input.msec", "is not a known field");
    expect_invalid("sleep", "[1]", "input", "must be an object");
}

static void test_fail(void **state)
{
    (void)state;
    assert_int_equal(check("fail", "{\"times\":0}"), 0);
    assert_int_equal(check("fail", "{\"times\":3}"), 0);
    assert_int_equal(check("fail", "{\"times\":1000,\"retryable\":false}"), 0);
    assert_int_equal(check("fail", "{\"times\":2,\"retryable\":true}"), 0);
    expect_invalid("fail", "{}", "input.times", "is required");
    expect_invalid("fail", "{\"times\":1001}", "input.times",
                   "must be an integer between 0 and 1000");
    expect_invalid("fail", "{\"times\":-3}", "input.times", NULL);
    expect_invalid("fail", "{\"times\":\"2\"}", "input.times", NULL);
    expect_invalid("fail", "{\"times\":2,\"retryable\":\"no\"}", "input.retryable",
                   "must be a boolean");
    expect_invalid("fail", "{\"times\":2,\"retryable\":0}", "input.retryable", NULL);
    expect_invalid("fail", "{\"times\":2,\"extra\":1}", "input.extra", NULL);
}

static void test_defaults(void **state)
{
    const wk_type_t *noop = wk_type_find("noop");
    (void)state;
    cm_cfg.max_attempts = 7;
    cm_cfg.job_timeout_ms = 12345;
    assert_int_equal(wk_type_max_attempts(noop), 7);
    assert_int_equal(wk_type_max_attempts(NULL), 7);
    assert_int_equal(wk_type_timeout_ms(wk_type_find("sleep")), 12345);
    assert_int_equal(wk_type_timeout_ms(NULL), 12345);
}

/* Default backoff: (attempt^4 + 15 + rand(10 * (attempt + 1))) s, times the scale. */
static void test_backoff(void **state)
{
    const wk_type_t *fail = wk_type_find("fail");
    (void)state;
    cm_cfg.backoff_scale = 1.0;
    for (int i = 0; i < 50; i++) {
        int64_t d1 = wk_type_backoff_ms(fail, 1), d3 = wk_type_backoff_ms(NULL, 3);
        assert_in_range(d1, 16000, 35000);
        assert_in_range(d3, 96000, 135000);
    }
    cm_cfg.backoff_scale = 0.001;
    for (int i = 0; i < 50; i++) assert_in_range(wk_type_backoff_ms(fail, 2), 31, 60);
    cm_cfg.backoff_scale = 0;
    assert_int_equal(wk_type_backoff_ms(fail, 5), 0);
}

static void test_input_helpers(void **state)
{
    static const char *const keys[] = {"a", "b", NULL};
    json_t *in = json_pack("{s:i, s:b}", "a", 5, "b", 1);
    json_int_t v = -1;
    int b = -1;
    (void)state;
    assert_int_equal(wk_input_int(in, "a", 1, 0, 10, &v, field, sizeof(field), msg,
                                  sizeof(msg)), 0);
    assert_int_equal(v, 5);
    v = 99;
    assert_int_equal(wk_input_int(in, "z", 0, 0, 10, &v, field, sizeof(field), msg,
                                  sizeof(msg)), 0);
    assert_int_equal(v, 99); /* optional and absent: untouched */
    assert_int_equal(wk_input_int(in, "a", 1, 6, 10, &v, field, sizeof(field), msg,
                                  sizeof(msg)), -1);
    assert_string_equal(msg, "must be an integer between 6 and 10");
    assert_int_equal(wk_input_bool(in, "b", &b, field, sizeof(field), msg, sizeof(msg)), 0);
    assert_int_equal(b, 1);
    assert_int_equal(wk_input_only(in, keys, field, sizeof(field), msg, sizeof(msg)), 0);
    json_object_set_new(in, "c", json_null());
    assert_int_equal(wk_input_only(in, keys, field, sizeof(field), msg, sizeof(msg)), -1);
    assert_string_equal(field, "input.c");
    json_decref(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),     cmocka_unit_test(test_names),
        cmocka_unit_test(test_noop),     cmocka_unit_test(test_sleep),
        cmocka_unit_test(test_fail),     cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_backoff),  cmocka_unit_test(test_input_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
