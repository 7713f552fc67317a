/* tests/unit/common/test_common.c — configuration table and small helpers. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "common/util.h"

static void test_config_defaults(void **state)
{
    (void)state;
    char err[256];
    unsetenv("CONVEYOR_REDIS_URL");
    unsetenv("CONVEYOR_CONCURRENCY");
    assert_int_equal(cm_config_load(err, sizeof(err)), 0);
    assert_string_equal(cm_cfg.redis_host, "127.0.0.1");
    assert_int_equal(cm_cfg.redis_port, 6379);
    assert_int_equal(cm_cfg.concurrency, 100);
    assert_int_equal(cm_cfg.max_body_bytes, 1048576);
    assert_true(cm_cfg.backoff_scale == 1.0);
    cm_config_free();
    assert_null(cm_cfg.listen);
}

static void test_config_values_and_errors(void **state)
{
    (void)state;
    char err[256];
    setenv("CONVEYOR_REDIS_URL", "redis://10.1.2.3:6390/", 1);
    setenv("CONVEYOR_CONCURRENCY", "7", 1);
    setenv("CONVEYOR_BACKOFF_SCALE", "0.001", 1);
    assert_int_equal(cm_config_load(err, sizeof(err)), 0);
    assert_string_equal(cm_cfg.redis_host, "10.1.2.3");
    assert_int_equal(cm_cfg.redis_port, 6390);
    assert_int_equal(cm_cfg.concurrency, 7);
    assert_true(cm_cfg.backoff_scale > 0.0009 && cm_cfg.backoff_scale < 0.0011);

    setenv("CONVEYOR_CONCURRENCY", "12abc", 1);
    assert_int_equal(cm_config_load(err, sizeof(err)), -1);
    assert_non_null(strstr(err, "CONVEYOR_CONCURRENCY"));
    setenv("CONVEYOR_CONCURRENCY", "0", 1); /* below the minimum */
    assert_int_equal(cm_config_load(err, sizeof(err)), -1);
    unsetenv("CONVEYOR_CONCURRENCY");

    setenv("CONVEYOR_REDIS_URL", "redis://:s3cret@127.0.0.1:6390", 1);
    assert_int_equal(cm_config_load(err, sizeof(err)), 0);
    assert_string_equal(cm_cfg.redis_host, "127.0.0.1");
    assert_int_equal(cm_cfg.redis_port, 6390);
    assert_string_equal(cm_cfg.redis_user, "");
    assert_string_equal(cm_cfg.redis_password, "s3cret");
    setenv("CONVEYOR_REDIS_URL", "redis://alice:pa:ss@cache.local:7000/0", 1);
    assert_int_equal(cm_config_load(err, sizeof(err)), 0);
    assert_string_equal(cm_cfg.redis_host, "cache.local");
    assert_int_equal(cm_cfg.redis_port, 7000);
    assert_string_equal(cm_cfg.redis_user, "alice");
    assert_string_equal(cm_cfg.redis_password, "pa:ss");
    setenv("CONVEYOR_REDIS_URL", "redis://onlypass@h", 1); /* as redis-cli -u: a password */
    assert_int_equal(cm_config_load(err, sizeof(err)), 0);
    assert_string_equal(cm_cfg.redis_host, "h");
    assert_string_equal(cm_cfg.redis_password, "onlypass");
    setenv("CONVEYOR_REDIS_URL", "redis://127.0.0.1:6379", 1);
    assert_int_equal(cm_config_load(err, sizeof(err)), 0);
    assert_string_equal(cm_cfg.redis_password, "");
    setenv("CONVEYOR_REDIS_URL", "redis://alice:@h:1", 1); /* an empty password */
    assert_int_equal(cm_config_load(err, sizeof(err)), -1);
    assert_non_null(strstr(err, "CONVEYOR_REDIS_URL"));
    assert_null(strstr(err, "alice")); /* the URL is not echoed */

    setenv("CONVEYOR_REDIS_URL", "redis://host:99999", 1);
    assert_int_equal(cm_config_load(err, sizeof(err)), -1);
    assert_non_null(strstr(err, "port"));
    unsetenv("CONVEYOR_REDIS_URL");

    setenv("CONVEYOR_PG_SCHEMA", "bad;schema", 1);
    assert_int_equal(cm_config_load(err, sizeof(err)), -1);
    assert_non_null(strstr(err, "CONVEYOR_PG_SCHEMA"));
    unsetenv("CONVEYOR_PG_SCHEMA");

    const char *bad_prefixes[] = {"a{b}", "with space", "tab\there",
                                  "x123456789x123456789x123456789x12", NULL};
    for (int i = 0; bad_prefixes[i]; i++) {
        setenv("CONVEYOR_REDIS_PREFIX", bad_prefixes[i], 1);
        assert_int_equal(cm_config_load(err, sizeof(err)), -1);
        assert_non_null(strstr(err, "CONVEYOR_REDIS_PREFIX"));
    }
    setenv("CONVEYOR_REDIS_PREFIX", "x123456789x123456789x123456789x1", 1); /* 32: the most */
    assert_int_equal(cm_config_load(err, sizeof(err)), 0);
    setenv("CONVEYOR_REDIS_PREFIX", "team-a.prod:cv_2", 1);
    assert_int_equal(cm_config_load(err, sizeof(err)), 0);
    assert_string_equal(cm_cfg.redis_prefix, "team-a.prod:cv_2");
    unsetenv("CONVEYOR_REDIS_PREFIX");
    unsetenv("CONVEYOR_BACKOFF_SCALE");
    cm_config_free();
}

static void test_config_table(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cm_config_print_table(f);
    fclose(f);
    assert_non_null(strstr(buf, "| `CONVEYOR_OPERATOR_TOKEN` |"));
    assert_non_null(strstr(buf, "| `CONVEYOR_LEASE_MS` | `30000` |"));
    free(buf);
}

static void test_secure_equal(void **state)
{
    (void)state;
    assert_true(cm_secure_equal("secret-token", "secret-token"));
    assert_false(cm_secure_equal("secret-token", "secret-tokeN"));
    assert_false(cm_secure_equal("secret-token", "secret-token2"));
    assert_false(cm_secure_equal("", "x"));
    assert_true(cm_secure_equal("", ""));

    unsigned char d[32];
    cm_sha256("op_secret", 9, d);
    assert_true(cm_secure_equal_digest("op_secret", d));
    assert_false(cm_secure_equal_digest("op_secreT", d));
    assert_false(cm_secure_equal_digest("op_secret ", d));
}

/* 1 if the n bytes at s are valid UTF-8 (checked here independently of log.c). */
static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], need, cp, min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) need = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef) need = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4) need = 3, cp = c & 0x07, min = 0x10000;
        else return 0;
        for (unsigned k = 1; k <= need; k++) {
            if (i + k >= n || (s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += need + 1;
    }
    return 1;
}

/* Log lines stay valid UTF-8 (and so JSON) whatever bytes a message carries: invalid
 * ones become \ufffd, valid characters pass, a long message is cut between characters. */
static void test_log_utf8(void **state)
{
    (void)state;
    char path[] = "/tmp/cv-log-test-XXXXXX", buf[16384];
    int fd = mkstemp(path), saved = dup(2);
    assert_true(fd >= 0 && saved >= 0);
    fflush(stderr);
    assert_int_equal(dup2(fd, 2), 2);

    cm_log_write(CM_LOG_ERR, "request_id", "r\xff" "1", "path /v1/\xff\xfe/x caf\xc3\xa9 \xe2\x82 end");
    cm_log_write(CM_LOG_ERR, NULL, NULL, "overlong \xc0\xaf surrogate \xed\xa0\x80 big \xf5\x80\x80\x80");
    char longmsg[3000];
    for (size_t i = 0; i + 2 < sizeof(longmsg); i += 2) memcpy(longmsg + i, "\xc3\xa9", 2);
    longmsg[sizeof(longmsg) - 2] = 'x';
    longmsg[sizeof(longmsg) - 1] = '\0';
    cm_log_write(CM_LOG_ERR, NULL, NULL, "%s", longmsg); /* cut: 2048 bytes, mid-character */
    fflush(stderr);
    dup2(saved, 2);
    close(saved);

    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_true(valid_utf8((const unsigned char *)buf, (size_t)n));
    assert_non_null(strstr(buf, "path /v1/\\ufffd\\ufffd/x caf\xc3\xa9 \\ufffd\\ufffd end"));
    assert_non_null(strstr(buf, "\"request_id\":\"r\\ufffd1\""));
    assert_non_null(strstr(buf, "overlong \\ufffd\\ufffd surrogate \\ufffd\\ufffd\\ufffd big \\ufffd"));
    /* three lines, each ending "} */
    int lines = 0;
    for (char *p = buf; (p = strstr(p, "\"}\n")); p += 3) lines++;
    assert_int_equal(lines, 3);
}

/* A cond set up by cm_cond_init_monotonic times out at a cm_deadline_ms deadline, and
 * not before it (the monotonic clock is the one both use). */
static void test_monotonic_wait(void **state)
{
    (void)state;
    pthread_cond_t c;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    struct timespec ts, now;

    cm_deadline_ms(&ts, 1999);
    clock_gettime(CLOCK_MONOTONIC, &now);
    assert_true(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
    int64_t ahead = (int64_t)(ts.tv_sec - now.tv_sec) * 1000 + (ts.tv_nsec - now.tv_nsec) / 1000000;
    assert_true(ahead > 1900 && ahead <= 1999);

    assert_int_equal(cm_cond_init_monotonic(&c), 0);
    int64_t t0 = cm_mono_ms();
    cm_deadline_ms(&ts, 50);
    pthread_mutex_lock(&m);
    int rc;
    while ((rc = pthread_cond_timedwait(&c, &m, &ts)) == 0) {
    }
    pthread_mutex_unlock(&m);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(cm_mono_ms() - t0 >= 49);
    pthread_cond_destroy(&c);
}

static void test_random_id_and_time(void **state)
{
    (void)state;
    char a[40], b[40], small[8], t[40];
    assert_int_equal(cm_random_id(a, sizeof(a), "req_", 20), 0);
    assert_int_equal(cm_random_id(b, sizeof(b), "req_", 20), 0);
    assert_int_equal(strlen(a), 24);
    assert_string_not_equal(a, b);
    assert_int_equal(cm_random_id(small, sizeof(small), "req_", 20), -1);
    cm_format_time(1700000000123LL, t, sizeof(t));
    assert_string_equal(t, "2023-11-14T22:13:20.123Z");
    cm_format_time(0, t, sizeof(t));
    assert_string_equal(t, "1970-01-01T00:00:00.000Z");
    cm_format_time(253402300799999LL, t, sizeof(t)); /* the last millisecond of 9999 */
    assert_string_equal(t, "9999-12-31T23:59:59.999Z");
    cm_format_time(951825600007LL, t, sizeof(t)); /* a leap day */
    assert_string_equal(t, "2000-02-29T12:00:00.007Z");
    /* digits by hand agree with gmtime + snprintf over many times */
    for (int64_t ms = 12345; ms < 253402300799999LL; ms += 9876543211LL) {
        char want[80];
        time_t sec = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&sec, &tm);
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
        cm_format_time(ms, t, sizeof(t));
        assert_string_equal(t, want);
    }
    cm_format_time(1700000000123LL, small, sizeof(small)); /* too small: cut, terminated */
    assert_string_equal(small, "2023-11");
    char hex[65];
    cm_sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults), cmocka_unit_test(test_config_values_and_errors),
        cmocka_unit_test(test_config_table),    cmocka_unit_test(test_secure_equal),
        cmocka_unit_test(test_random_id_and_time),
        cmocka_unit_test(test_monotonic_wait),
        cmocka_unit_test(test_log_utf8),
    };
    return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
