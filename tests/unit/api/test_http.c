/* tests/unit/api/test_http.c — request ids, integers, RFC 3339 times, bearer tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/auth.h"
#include "common/jwt.h"
#include "common/util.h"
#include "api/http.h"
#include "common/config.h"

static void test_request_id_valid(void **state)
{
    (void)state;
    char s[200];
    assert_true(api_request_id_valid("a"));
    assert_true(api_request_id_valid("Req.1_2-3"));
    memset(s, 'x', 128);
    s[128] = '\0';
    assert_true(api_request_id_valid(s));
    s[128] = 'x';
    s[129] = '\0';
    assert_false(api_request_id_valid(s)); /* 129 characters */
    assert_false(api_request_id_valid(""));
    assert_false(api_request_id_valid(NULL));
    assert_false(api_request_id_valid("a b"));
    assert_false(api_request_id_valid("a/b"));
    assert_false(api_request_id_valid("a\nb"));
    assert_false(api_request_id_valid("caf\xc3\xa9"));
}

static void test_request_id_generated(void **state)
{
    (void)state;
    char id[API_REQ_ID_MAX + 1], other[API_REQ_ID_MAX + 1];
    api_request_id("client-id.7", id);
    assert_string_equal(id, "client-id.7");
    api_request_id("bad id", id);
    api_request_id(NULL, other);
    assert_int_equal(strlen(id), 24);
    assert_memory_equal(id, "req_", 4);
    for (const char *p = id + 4; *p; p++)
        assert_non_null(
            strchr("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", *p));
    assert_string_not_equal(id, other);
    assert_true(api_request_id_valid(id));
}

static void test_parse_int(void **state)
{
    (void)state;
    long long v = 42;
    assert_int_equal(api_parse_int("0", 0, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(api_parse_int("-5", -10, 10, &v), 0);
    assert_int_equal(v, -5);
    assert_int_equal(api_parse_int("60", 0, 60, &v), 0);
    assert_int_equal(v, 60);
    v = 7;
    assert_int_equal(api_parse_int("61", 0, 60, &v), -1);
    assert_int_equal(api_parse_int("-1", 0, 60, &v), -1);
    assert_int_equal(api_parse_int("", 0, 60, &v), -1);
    assert_int_equal(api_parse_int("-", 0, 60, &v), -1);
    assert_int_equal(api_parse_int("1a", 0, 60, &v), -1);
    assert_int_equal(api_parse_int(" 1", 0, 60, &v), -1);
    assert_int_equal(api_parse_int("+1", 0, 60, &v), -1);
    assert_int_equal(api_parse_int("1.0", 0, 60, &v), -1);
    assert_int_equal(api_parse_int("99999999999999999999", 0, INT64_MAX, &v), -1);
    assert_int_equal(api_parse_int(NULL, 0, 60, &v), -1);
    assert_int_equal(v, 7); /* untouched on failure */
}

static void test_rfc3339(void **state)
{
    (void)state;
    int64_t ms = 0;
    assert_int_equal(api_parse_rfc3339("1970-01-01T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(api_parse_rfc3339("2024-02-29T12:34:56.789Z", &ms), 0);
    assert_int_equal(ms, 1709210096789LL);
    assert_int_equal(api_parse_rfc3339("2024-02-29t12:34:56.789z", &ms), 0);
    assert_int_equal(ms, 1709210096789LL);
    assert_int_equal(api_parse_rfc3339("2024-02-29T13:34:56.789+01:00", &ms), 0);
    assert_int_equal(ms, 1709210096789LL);
    assert_int_equal(api_parse_rfc3339("2024-02-29T07:04:56.789-05:30", &ms), 0);
    assert_int_equal(ms, 1709210096789LL);
    assert_int_equal(api_parse_rfc3339("2000-03-01T00:00:00.5Z", &ms), 0);
    assert_int_equal(ms, 951868800500LL);
    assert_int_equal(api_parse_rfc3339("2000-03-01T00:00:00.123456Z", &ms), 0);
    assert_int_equal(ms, 951868800123LL);
    assert_int_equal(api_parse_rfc3339("1969-12-31T23:59:59Z", &ms), 0);
    assert_int_equal(ms, -1000);

    const char *bad[] = {
        "", "2024", "2024-01-01", "2023-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z", "2024-00-01T00:00:00Z", "2024-04-31T00:00:00Z",
        "2024-01-01 00:00:00Z", "2024-01-01T00:00:00", "2024-01-01T24:00:00Z",
        "2024-01-01T00:60:00Z", "2024-01-01T00:00:61Z", "2024-01-01T00:00:00.Z",
        "2024-01-01T00:00:00+0100", "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00Zx",
        "24-01-01T00:00:00Z", "2024-1-01T00:00:00Z", "2024-01-01T0:00:00Z", "x024-01-01T00:00:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 99;
        if (api_parse_rfc3339(bad[i], &ms) != -1) fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(ms, 99);
    }
}

static void test_authenticate(void **state)
{
    (void)state;
    api_principal_t p;
    char *saved = cm_cfg.operator_token;
    cm_cfg.operator_token = "s3cret-token";
    assert_int_equal(api_authenticate("Bearer s3cret-token", &p), 0);
    assert_string_equal(p.owner, "operator");
    assert_int_equal(p.role, API_ROLE_ADMIN);
    assert_int_equal(api_authenticate("bearer   s3cret-token", &p), 0);
    assert_int_equal(api_authenticate("Bearer s3cret-tokenX", &p), API_AUTH_EINVALID);
    assert_int_equal(api_authenticate("Bearer s3cret-toke", &p), API_AUTH_EINVALID);
    assert_string_equal(p.owner, "");
    assert_int_equal(api_authenticate(NULL, &p), API_AUTH_EMISSING);
    assert_int_equal(api_authenticate("", &p), API_AUTH_EMISSING);
    assert_int_equal(api_authenticate("s3cret-token", &p), API_AUTH_EMISSING);
    assert_int_equal(api_authenticate("Basic s3cret-token", &p), API_AUTH_EMISSING);
    assert_int_equal(api_authenticate("Bearer ", &p), API_AUTH_EMISSING);
    assert_int_equal(api_authenticate("Bearer s3cret-token extra", &p), API_AUTH_EMISSING);
    cm_cfg.operator_token = "";
    assert_int_equal(api_authenticate("Bearer ", &p), API_AUTH_EMISSING);
    assert_int_equal(api_authenticate("Bearer x", &p), API_AUTH_EINVALID);
    cm_cfg.operator_token = saved;
}

/* API keys are recognised by form; the digest is what the gate looks up. */
static void test_authenticate_api_key(void **state)
{
    (void)state;
    api_principal_t p;
    const char *key = "ak_live_0123456789abcdefghijABCDEFGHIJ0123456789";
    char hex[65], hdr[128];
    assert_int_equal(strlen(key), 8 + API_KEY_RAND);
    snprintf(hdr, sizeof(hdr), "Bearer %s", key);
    assert_int_equal(api_authenticate(hdr, &p), 0);
    assert_int_equal(p.cred, API_CRED_APIKEY);
    cm_sha256_hex(key, strlen(key), hex);
    assert_string_equal(p.key_sha, hex);
    assert_string_equal(p.owner, ""); /* known only once the gate read the key */
    /* one character short, one too many, a character outside base62 */
    assert_int_equal(api_authenticate_token("ak_live_0123456789abcdefghijABCDEFGHIJ012345678", &p),
                     API_AUTH_EINVALID);
    assert_int_equal(api_authenticate_token("ak_live_0123456789abcdefghijABCDEFGHIJ0123456789a", &p),
                     API_AUTH_EINVALID);
    assert_int_equal(api_authenticate_token("ak_live_0123456789abcdefghijABCDEFGHIJ012345678-", &p),
                     API_AUTH_EINVALID);
    assert_int_equal(api_authenticate_token("", &p), API_AUTH_EMISSING);
}

/* Access tokens: signature, alg and exp are checked here; sub/role/sid fill the
 * principal. */
static void test_authenticate_jwt(void **state)
{
    (void)state;
    api_principal_t p;
    char *saved = cm_cfg.jwt_secret;
    const char *secret = "0123456789abcdef0123456789abcdef0123";
    cm_jwt_claims_t c = {.sub = "usr_abc", .role = "admin", .sid = "ses_1", .jti = "j1"};
    char tok[CM_JWT_MAX], hdr[CM_JWT_MAX + 16];

    cm_cfg.jwt_secret = (char *)secret;
    c.iat = cm_now_ms() / 1000;
    c.exp = c.iat + 60;
    assert_true(cm_jwt_sign((const unsigned char *)secret, strlen(secret), &c, tok, sizeof(tok)) > 0);
    snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
    assert_int_equal(api_authenticate(hdr, &p), 0);
    assert_int_equal(p.cred, API_CRED_ACCESS);
    assert_string_equal(p.owner, "usr_abc");
    assert_string_equal(p.sid, "ses_1");
    assert_int_equal(p.role, API_ROLE_ADMIN);
    /* another secret */
    cm_cfg.jwt_secret = "fedcba9876543210fedcba9876543210fedc";
    assert_int_equal(api_authenticate(hdr, &p), API_AUTH_EINVALID);
    /* a secret too short to trust */
    cm_cfg.jwt_secret = "short";
    assert_int_equal(api_authenticate(hdr, &p), API_AUTH_EINVALID);
    cm_cfg.jwt_secret = (char *)secret;
    /* expired */
    c.exp = c.iat - 1;
    assert_true(cm_jwt_sign((const unsigned char *)secret, strlen(secret), &c, tok, sizeof(tok)) > 0);
    assert_int_equal(api_authenticate_token(tok, &p), API_AUTH_EINVALID);
    /* a role the api does not know */
    c.exp = c.iat + 60;
    snprintf(c.role, sizeof(c.role), "root");
    assert_true(cm_jwt_sign((const unsigned char *)secret, strlen(secret), &c, tok, sizeof(tok)) > 0);
    assert_int_equal(api_authenticate_token(tok, &p), API_AUTH_EINVALID);
    cm_cfg.jwt_secret = saved;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_id_valid), cmocka_unit_test(test_request_id_generated),
        cmocka_unit_test(test_parse_int),        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_authenticate),
        cmocka_unit_test(test_authenticate_api_key), cmocka_unit_test(test_authenticate_jwt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
