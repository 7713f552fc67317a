/* tests/unit/queue/test_codec.c — the msgpack record: round trip and hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "queue/queue.h"

static q_record_t sample(void)
{
    q_record_t r = {.id = "job_0123456789abcdefghijKL", .type = "sleep", .queue = "default",
                    .owner = "operator", .input = "{\"ms\":5}", .idempotency_key = "k-1",
                    .max_attempts = 7, .priority = 9, .timeout_ms = 1500};
    return r;
}

static void test_round_trip(void **state)
{
    (void)state;
    q_record_t in = sample(), out;
    char *buf, why[128];
    size_t len;
    assert_int_equal(q_record_encode(&in, &buf, &len), 0);
    assert_int_equal(q_record_decode(buf, len, &out, why, sizeof(why)), 0);
    assert_string_equal(out.id, in.id);
    assert_string_equal(out.type, "sleep");
    assert_string_equal(out.queue, "default");
    assert_string_equal(out.owner, "operator");
    assert_string_equal(out.input, "{\"ms\":5}");
    assert_string_equal(out.idempotency_key, "k-1");
    assert_int_equal(out.max_attempts, 7);
    assert_int_equal(out.priority, 9);
    assert_int_equal(out.timeout_ms, 1500);
    q_record_clear(&out);
    assert_null(out.id);
    free(buf);
}

static void test_without_idempotency_key(void **state)
{
    (void)state;
    q_record_t in = sample(), out;
    char *buf, why[128];
    size_t len;
    in.idempotency_key = NULL;
    assert_int_equal(q_record_encode(&in, &buf, &len), 0);
    assert_int_equal(q_record_decode(buf, len, &out, why, sizeof(why)), 0);
    assert_null(out.idempotency_key);
    q_record_clear(&out);
    free(buf);
}

static void expect_corrupt(const char *buf, size_t len, const char *reason_part)
{
    q_record_t out;
    char why[128] = "";
    assert_int_equal(q_record_decode(buf, len, &out, why, sizeof(why)), Q_ECORRUPT);
    assert_non_null(strstr(why, reason_part));
    assert_null(out.id); /* nothing left to free */
}

static void test_hostile_counts(void **state)
{
    (void)state;
    /* array32 declaring 4 billion elements in 5 bytes: must not allocate for them */
    expect_corrupt("\xdd\xff\xff\xff\xff", 5, "well-formed");
    /* map32 with a huge count */
    expect_corrupt("\xdf\x7f\xff\xff\xff\x01", 6, "well-formed");
    /* str32 longer than the buffer */
    expect_corrupt("\xdb\x00\x10\x00\x00" "abc", 8, "well-formed");
    /* bin8 longer than the buffer */
    expect_corrupt("\xc4\x09" "abc", 5, "well-formed");
    /* the never-used byte 0xc1 */
    expect_corrupt("\xc1", 1, "well-formed");
    /* deep nesting */
    char deep[64];
    memset(deep, 0x91, sizeof(deep)); /* fixarray of 1, nested 64 times */
    expect_corrupt(deep, sizeof(deep), "well-formed");
    /* trailing bytes */
    expect_corrupt("\x80\x00", 2, "well-formed");
    /* empty */
    expect_corrupt("", 0, "size");
    /* text that is not msgpack at all */
    expect_corrupt("hello world", 11, "");
}

static void test_wrong_shapes(void **state)
{
    (void)state;
    expect_corrupt("\x93\x01\x02\x03", 4, "not a msgpack map"); /* array, not map */
    expect_corrupt("\x81\xa2id\xa1x", 6, "lacks field");         /* map missing fields */
    /* id given as an integer */
    q_record_t in = sample();
    char *buf;
    size_t len;
    assert_int_equal(q_record_encode(&in, &buf, &len), 0);
    /* first key after the map header is "id" (fixstr 2) then fixstr value 0xba (26 chars):
     * replace the value's header with a positive fixint and shift nothing: the length
     * no longer matches, which the walker must catch */
    assert_true((unsigned char)buf[4] == 0xba);
    buf[4] = 0x05;
    expect_corrupt(buf, len, "");
    free(buf);
}

static void test_names(void **state)
{
    (void)state;
    char id[Q_ID_SIZE], id2[Q_ID_SIZE];
    assert_int_equal(q_new_id(id), 0);
    assert_int_equal(q_new_id(id2), 0);
    assert_true(q_valid_id(id));
    assert_string_not_equal(id, id2);
    assert_int_equal(strlen(id), 26);
    assert_false(q_valid_id("job_short"));
    assert_false(q_valid_id("job_0123456789abcdefghij-L"));
    assert_false(q_valid_id("xyz_0123456789abcdefghijKL"));
    assert_true(q_valid_queue("Critical_1.a-b"));
    assert_false(q_valid_queue(""));
    assert_false(q_valid_queue("a b"));
    assert_false(q_valid_queue("a{b}"));
    assert_true(q_valid_type("ai.chat"));
    assert_false(q_valid_type("AI.chat"));
    char longname[80];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[79] = '\0';
    assert_false(q_valid_type(longname));
    assert_true(q_status_terminal("dead"));
    assert_false(q_status_terminal("scheduled"));
}

static void test_backoff(void **state)
{
    (void)state;
    for (int a = 1; a <= 5; a++) {
        int64_t ms = q_backoff_ms(a, 1.0);
        int64_t base = ((int64_t)a * a * a * a + 15) * 1000;
        assert_true(ms >= base);
        assert_true(ms < base + 10LL * (a + 1) * 1000);
    }
    assert_true(q_backoff_ms(3, 0.001) < 200);
    assert_true(q_backoff_ms(25, 1.0) > q_backoff_ms(5, 1.0));
}

static void test_argv_eval_fallback(void **state)
{
    (void)state;
    q_argv_t *a = q_cmd_fetch("cv:", "default", 10, 30000, "w1");
    assert_non_null(a);
    assert_string_equal(a->argv[0], "EVALSHA");
    assert_int_equal(strlen(a->argv[1]), 40);
    assert_string_equal(a->argv[3], "cv:{default}:ready");
    assert_int_equal(q_argv_to_eval(a), 0);
    assert_string_equal(a->argv[0], "EVAL");
    assert_non_null(strstr(a->argv[1], "ZPOPMIN"));
    assert_int_equal(q_argv_to_eval(a), Q_EINVAL); /* already EVAL */
    q_argv_free(a);

    const char *ids[] = {"job_a", "job_b"};
    long long toks[] = {3, 4};
    a = q_cmd_heartbeat("cv:", "q1", 9000, 2, ids, toks);
    assert_non_null(a);
    assert_int_equal(a->argc, 3 + 1 + 2 + 4);
    assert_string_equal(a->argv[8], "job_b");
    assert_string_equal(a->argv[9], "4");
    q_argv_free(a);
}

/* The AUTH command both kinds of client send: none without a password, the user when
 * CONVEYOR_REDIS_URL names one. */
static void test_auth_argv(void **state)
{
    (void)state;
    const char *argv[3];
    strcpy(cm_cfg.redis_user, "");
    strcpy(cm_cfg.redis_password, "");
    assert_int_equal(q_redis_auth_argv(argv), 0);
    strcpy(cm_cfg.redis_password, "pw");
    assert_int_equal(q_redis_auth_argv(argv), 2);
    assert_string_equal(argv[0], "AUTH");
    assert_string_equal(argv[1], "pw");
    strcpy(cm_cfg.redis_user, "alice");
    assert_int_equal(q_redis_auth_argv(argv), 3);
    assert_string_equal(argv[1], "alice");
    assert_string_equal(argv[2], "pw");
    cm_cfg.redis_user[0] = cm_cfg.redis_password[0] = '\0';
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),      cmocka_unit_test(test_without_idempotency_key),
        cmocka_unit_test(test_hostile_counts),  cmocka_unit_test(test_wrong_shapes),
        cmocka_unit_test(test_names),           cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_argv_eval_fallback), cmocka_unit_test(test_auth_argv),
    };
    return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
