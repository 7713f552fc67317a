/* tests/unit/common/test_jwt.c — HS256 tokens: round trips, independent vectors, every
 * way a token is refused. Tokens that must fail for one reason only are built here with
 * OpenSSL directly (not with cm_jwt_sign) and signed with the right key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jwt.h"

#define KEY "0123456789abcdef0123456789abcdef" /* 32 bytes, as the api requires */
#define NOW 1700000000LL

static const unsigned char *key = (const unsigned char *)KEY;
static const size_t keylen = sizeof(KEY) - 1;

/* base64url without padding, through OpenSSL's plain base64: independent of the module. */
static void b64url(const void *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=') len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++) {
        if (out[i] == '+') out[i] = '-';
        else if (out[i] == '/') out[i] = '_';
    }
}

/* Builds b64url(header).b64url(payload).b64url(HMAC(md, k, first two parts)) into out
 * (>= 4096 bytes). md NULL leaves the signature part empty (alg "none"). */
static void make_token_md(const EVP_MD *md, const unsigned char *k, size_t klen,
                          const char *header, const char *payload, char *out)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t n;

    b64url(header, strlen(header), out);
    strcat(out, ".");
    n = strlen(out);
    b64url(payload, strlen(payload), out + n);
    n = strlen(out);
    strcat(out, ".");
    if (!md) return;
    assert_non_null(HMAC(md, k, (int)klen, (const unsigned char *)out, n, mac, &maclen));
    b64url(mac, maclen, out + n + 1);
}

static void make_token(const char *header, const char *payload, char *out)
{
    make_token_md(EVP_sha256(), key, keylen, header, payload, out);
}

#define HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define GOOD_PAYLOAD                                                                     \
    "{\"iss\":\"conveyor\",\"sub\":\"usr_1\",\"role\":\"admin\",\"sid\":\"ses_9\","     \
    "\"jti\":\"tok_42\",\"iat\":1700000000,\"exp\":1700000900}"

static void claims(cm_jwt_claims_t *c)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->sub, "usr_1");
    strcpy(c->role, "admin");
    strcpy(c->sid, "ses_9");
    strcpy(c->jti, "tok_42");
    c->iat = NOW;
    c->exp = NOW + 900;
}

/* Verifies with the test key at NOW and checks *out was left alone on failure. */
static int verify(const char *tok)
{
    cm_jwt_claims_t out, before;
    memset(&out, 0xA5, sizeof(out));
    before = out;
    int rc = cm_jwt_verify(key, keylen, tok, NOW, &out);
    if (rc != 0) assert_memory_equal(&out, &before, sizeof(out));
    return rc;
}

static void test_round_trip(void **state)
{
    (void)state;
    cm_jwt_claims_t c, got;
    char tok[CM_JWT_MAX];

    claims(&c);
    int n = cm_jwt_sign(key, keylen, &c, tok, sizeof(tok));
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(tok));
    assert_int_equal(cm_jwt_verify(key, keylen, tok, NOW, &got), 0);
    assert_string_equal(got.sub, "usr_1");
    assert_string_equal(got.role, "admin");
    assert_string_equal(got.sid, "ses_9");
    assert_string_equal(got.jti, "tok_42");
    assert_int_equal(got.iat, NOW);
    assert_int_equal(got.exp, NOW + 900);

    /* Strings that need JSON escaping and multi-byte UTF-8 survive; full-size fields fit. */
    strcpy(c.sub, "a\"b\\c\n\x01 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    memset(c.jti, 'j', sizeof(c.jti) - 1);
    c.jti[sizeof(c.jti) - 1] = '\0';
    c.iat = -5;
    c.exp = INT64_MAX;
    assert_true(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)) > 0);
    assert_int_equal(cm_jwt_verify(key, keylen, tok, NOW, &got), 0);
    assert_string_equal(got.sub, c.sub);
    assert_string_equal(got.jti, c.jti);
    assert_int_equal(got.iat, -5);
    assert_true(got.exp == INT64_MAX);
}

static void test_matches_independent_vector(void **state)
{
    (void)state;
    cm_jwt_claims_t c, got;
    char mine[4096], tok[CM_JWT_MAX];

    /* The module's exact output for these claims, rebuilt with OpenSSL alone. */
    make_token(HDR, GOOD_PAYLOAD, mine);
    assert_int_equal(verify(mine), 0);
    assert_int_equal(cm_jwt_verify(key, keylen, mine, NOW, &got), 0);
    assert_string_equal(got.sub, "usr_1");
    claims(&c);
    assert_true(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)) > 0);
    assert_string_equal(tok, mine);
    assert_memory_equal(tok, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.", 37);

    /* Header members in another order and with whitespace are still HS256. */
    make_token("{ \"typ\" : \"JWT\",\r\n \"alg\" : \"HS256\" }", GOOD_PAYLOAD, mine);
    assert_int_equal(verify(mine), 0);
    make_token("{\"alg\":\"HS256\"}", GOOD_PAYLOAD, mine); /* typ is optional */
    assert_int_equal(verify(mine), 0);
}

/* RFC 7515 appendix A.1: a real HS256 token from the spec. Its signature must check out;
 * its claims (iss "joe", no sub) are not ours, so it ends in ECLAIMS — never ESIG. */
static void test_rfc7515_vector(void **state)
{
    (void)state;
    static const char jwk_k[] = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0"
                                "iPS4hcgUuTwjAzZr1Z9CAow";
    static const char rfc_tok[] =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290"
        "Ijp0cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    char b64[128];
    unsigned char k[96];
    cm_jwt_claims_t out;
    size_t n = strlen(jwk_k);

    /* Decode the JWK "k" with OpenSSL's plain base64 decoder. */
    memcpy(b64, jwk_k, n);
    for (size_t i = 0; i < n; i++) {
        if (b64[i] == '-') b64[i] = '+';
        else if (b64[i] == '_') b64[i] = '/';
    }
    while (n % 4) b64[n++] = '=';
    int klen = EVP_DecodeBlock(k, (unsigned char *)b64, (int)n);
    assert_int_equal(klen, 66); /* 64 bytes + 2 bytes of padding artefact */
    klen = 64;

    assert_int_equal(cm_jwt_verify(k, (size_t)klen, rfc_tok, 1300819379, &out), CM_JWT_ECLAIMS);
    k[0] ^= 1;
    assert_int_equal(cm_jwt_verify(k, (size_t)klen, rfc_tok, 1300819379, &out), CM_JWT_ESIG);
}

static void test_bad_signature(void **state)
{
    (void)state;
    cm_jwt_claims_t c, out;
    char tok[CM_JWT_MAX], t2[CM_JWT_MAX], other[4096];

    claims(&c);
    assert_true(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)) > 0);

    /* Wrong key, one bit off, and an empty key (never a valid secret). */
    assert_int_equal(cm_jwt_verify((const unsigned char *)"another key", 11, tok, NOW, &out),
                     CM_JWT_ESIG);
    assert_int_equal(cm_jwt_verify((const unsigned char *)KEY "x", keylen - 1, tok, NOW, &out),
                     CM_JWT_ESIG);
    assert_int_equal(cm_jwt_verify(key, 0, tok, NOW, &out), CM_JWT_ESIG);

    /* Tampered signature: change one character at the start, the middle, the end (the
     * last one keeping its two unused bits zero, so it stays well-formed). */
    static const char alpha[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t at = 0; at < 43; at += 21) {
        strcpy(t2, tok);
        char *ch = strrchr(t2, '.') + 1 + at;
        size_t v = (size_t)(strchr(alpha, *ch) - alpha);
        *ch = alpha[v ^ 4];
        assert_int_equal(verify(t2), CM_JWT_ESIG);
    }

    /* Tampered payload: swap in another well-formed payload (role user -> admin). */
    make_token(HDR, "{\"iss\":\"conveyor\",\"sub\":\"usr_1\",\"role\":\"user\",\"sid\":\"s\","
                    "\"jti\":\"j\",\"iat\":1,\"exp\":1800000000}",
               other);
    char *p1 = strchr(other, '.'), *p2 = strrchr(other, '.');
    char forged[4096];
    snprintf(forged, sizeof(forged), "%.*s%.*s%s", (int)(p1 - other), other,
             (int)(p2 - p1), p1, strrchr(tok, '.'));
    assert_string_not_equal(forged, tok);
    assert_int_equal(verify(forged), CM_JWT_ESIG);
    /* Same, changing one payload character in place. */
    strcpy(t2, tok);
    p1 = strchr(t2, '.') + 1;
    p1[2] = p1[2] == 'x' ? 'y' : 'x';
    assert_int_equal(verify(t2), CM_JWT_ESIG);

    /* The signature is checked before the payload is parsed: garbage payload, wrong key. */
    make_token_md(EVP_sha256(), (const unsigned char *)"wrong", 5, HDR, "not json {", other);
    assert_int_equal(verify(other), CM_JWT_ESIG);
    make_token(HDR, "not json {", other); /* right key: now the claims are judged */
    assert_int_equal(verify(other), CM_JWT_ECLAIMS);
}

static void test_bad_alg(void **state)
{
    (void)state;
    char tok[4096];

    make_token_md(NULL, NULL, 0, "{\"alg\":\"none\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, tok);
    assert_int_equal(tok[strlen(tok) - 1], '.'); /* empty signature */
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token("{\"alg\":\"none\"}", GOOD_PAYLOAD, tok); /* none, yet signed */
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token_md(EVP_sha512(), key, keylen, "{\"alg\":\"HS512\",\"typ\":\"JWT\"}", GOOD_PAYLOAD,
                  tok);
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token("{\"typ\":\"JWT\"}", GOOD_PAYLOAD, tok); /* missing */
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token("{\"alg\":\"hs256\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, tok);
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token("{\"alg\":\"HS256 \"}", GOOD_PAYLOAD, tok);
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token("{\"alg\":256}", GOOD_PAYLOAD, tok);
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token("{\"alg\":null}", GOOD_PAYLOAD, tok);
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token("{\"alg\":\"RS256\"}", GOOD_PAYLOAD, tok);
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token("{\"alg\":\"HS256\",\"typ\":\"JWS\"}", GOOD_PAYLOAD, tok);
    assert_int_equal(verify(tok), CM_JWT_EALG);
    make_token("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", GOOD_PAYLOAD, tok);
    assert_int_equal(verify(tok), CM_JWT_EALG);

    /* A header that is not one JSON object is malformed, whatever it says. */
    make_token("{\"alg\":\"HS256\",\"alg\":\"none\"}", GOOD_PAYLOAD, tok); /* duplicate */
    assert_int_equal(verify(tok), CM_JWT_EMALFORMED);
    make_token("[\"HS256\"]", GOOD_PAYLOAD, tok);
    assert_int_equal(verify(tok), CM_JWT_EMALFORMED);
    make_token("{\"alg\":\"HS256\"} x", GOOD_PAYLOAD, tok);
    assert_int_equal(verify(tok), CM_JWT_EMALFORMED);
}

static void test_expired(void **state)
{
    (void)state;
    cm_jwt_claims_t c, out;
    char tok[CM_JWT_MAX];

    claims(&c);
    c.exp = NOW;
    assert_true(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)) > 0);
    assert_int_equal(verify(tok), CM_JWT_EEXPIRED); /* exp == now */
    assert_int_equal(cm_jwt_verify(key, keylen, tok, NOW - 1, &out), 0);
    c.exp = NOW - 3600;
    assert_true(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)) > 0);
    assert_int_equal(verify(tok), CM_JWT_EEXPIRED);
    c.exp = NOW + 1;
    assert_true(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)) > 0);
    assert_int_equal(verify(tok), 0);
}

static void test_bad_claims(void **state)
{
    (void)state;
    static const char *const payloads[] = {
        /* exp as a string, a real, an exponent; iat missing */
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\","
        "\"iat\":1,\"exp\":\"1800000000\"}",
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\","
        "\"iat\":1,\"exp\":1.5}",
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\","
        "\"iat\":1,\"exp\":18e8}",
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\","
        "\"exp\":1800000000}",
        /* exp beyond int64 */
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\","
        "\"iat\":1,\"exp\":99999999999999999999}",
        /* sub of 64 characters (the field holds 63) */
        "{\"iss\":\"conveyor\",\"sub\":\"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu"
        "uuuuuuu\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\",\"iat\":1,\"exp\":1800000000}",
        /* role of 16 characters */
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":\"administratorxxx\",\"sid\":\"s\","
        "\"jti\":\"j\",\"iat\":1,\"exp\":1800000000}",
        /* wrong, missing, non-string iss */
        "{\"iss\":\"conveyor2\",\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\","
        "\"iat\":1,\"exp\":1800000000}",
        "{\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\",\"iat\":1,"
        "\"exp\":1800000000}",
        "{\"iss\":[\"conveyor\"],\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\","
        "\"iat\":1,\"exp\":1800000000}",
        /* sub missing, role a number, sid null, jti missing */
        "{\"iss\":\"conveyor\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\",\"iat\":1,"
        "\"exp\":1800000000}",
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":1,\"sid\":\"s\",\"jti\":\"j\",\"iat\":1,"
        "\"exp\":1800000000}",
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":\"user\",\"sid\":null,\"jti\":\"j\","
        "\"iat\":1,\"exp\":1800000000}",
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\",\"iat\":1,"
        "\"exp\":1800000000}",
        /* a NUL inside sub, a duplicated sub, not an object, not JSON */
        "{\"iss\":\"conveyor\",\"sub\":\"u\\u0000admin\",\"role\":\"user\",\"sid\":\"s\","
        "\"jti\":\"j\",\"iat\":1,\"exp\":1800000000}",
        "{\"iss\":\"conveyor\",\"sub\":\"u\",\"sub\":\"v\",\"role\":\"user\",\"sid\":\"s\","
        "\"jti\":\"j\",\"iat\":1,\"exp\":1800000000}",
        "[1,2]",
        "\"conveyor\"",
        "",
    };
    char tok[4096];

    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        make_token(HDR, payloads[i], tok);
        if (!payloads[i][0]) { /* an empty payload is an empty part */
            assert_int_equal(verify(tok), CM_JWT_EMALFORMED);
            continue;
        }
        if (verify(tok) != CM_JWT_ECLAIMS) fail_msg("payload %zu: %s", i, payloads[i]);
    }
    /* Unknown claims are ignored; a 63-character sub fits. */
    make_token(HDR,
               "{\"iss\":\"conveyor\",\"sub\":\"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu"
               "uuuuuuuuuuuuuuuu\",\"role\":\"user\",\"sid\":\"s\",\"jti\":\"j\",\"iat\":1,"
               "\"exp\":1800000000,\"aud\":\"x\"}",
               tok);
    assert_int_equal(verify(tok), 0);
}

/* Builds a good token of exactly want characters into out (>= 4096 bytes): padding
 * claims "x" (any length) and "y" (1-3 digits) reach every length. Returns 1 if found. */
static int token_of_len(size_t want, char *out)
{
    char payload[2048];
    for (int pad = 0; pad < 1000; pad++) {
        for (int y = 1; y <= 100; y *= 10) {
            snprintf(payload, sizeof(payload),
                     "{\"iss\":\"conveyor\",\"sub\":\"u\",\"role\":\"user\",\"sid\":\"s\","
                     "\"jti\":\"j\",\"iat\":1,\"exp\":1800000000,\"y\":%d,\"x\":\"%0*d\"}",
                     y, pad, 0);
            make_token(HDR, payload, out);
            if (strlen(out) == want) return 1;
        }
    }
    return 0;
}

static void test_malformed(void **state)
{
    (void)state;
    cm_jwt_claims_t c, out;
    char tok[CM_JWT_MAX], t2[4096];
    static const char *const bad[] = {
        "", ".", "..", "...", "a", "a.b", "a.b.c.d", ".eyJ9.AAAA", "eyJ9..AAAA", "eyJ9.eyJ9",
    };

    assert_int_equal(cm_jwt_verify(key, keylen, NULL, NOW, &out), CM_JWT_EMALFORMED);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (verify(bad[i]) != CM_JWT_EMALFORMED) fail_msg("token \"%s\"", bad[i]);

    claims(&c);
    int n = cm_jwt_sign(key, keylen, &c, tok, sizeof(tok));
    assert_true(n > 0);
    char *p1 = strchr(tok, '.'), *p2 = strrchr(tok, '.');

    /* Padding where it would be legal in plain base64url-with-padding. */
    snprintf(t2, sizeof(t2), "%s=", tok);
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    snprintf(t2, sizeof(t2), "%.*s=%s", (int)(p2 - tok), tok, p2);
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    /* Characters from plain base64 or outside any alphabet, in each part. */
    const char *chars = "+/=* \n\x80";
    for (const char *ch = chars; *ch; ch++) {
        size_t at[3] = {3, (size_t)(p1 - tok) + 3, (size_t)(p2 - tok) + 3};
        for (int k = 0; k < 3; k++) {
            strcpy(t2, tok);
            t2[at[k]] = *ch;
            if (verify(t2) != CM_JWT_EMALFORMED)
                fail_msg("char %02x in part %d", (unsigned char)*ch, k);
        }
    }
    /* 2 parts, 4 parts, empty signature on an HS256 header, signature of the wrong size. */
    snprintf(t2, sizeof(t2), "%.*s", (int)(p2 - tok), tok);
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    snprintf(t2, sizeof(t2), "%s.%s", tok, p2 + 1);
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    snprintf(t2, sizeof(t2), "%s.", tok);
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    snprintf(t2, sizeof(t2), "%.*s.", (int)(p2 - tok), tok);
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    snprintf(t2, sizeof(t2), "%sAAAA", tok);
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    snprintf(t2, sizeof(t2), "%.*s", n - 4, tok);
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    /* Impossible length: a payload of 4k+1 characters. */
    size_t plen = (size_t)(p2 - p1 - 1), extra = (5 - plen % 4) % 4;
    snprintf(t2, sizeof(t2), "%.*s%.*s%s", (int)(p2 - tok), tok, (int)extra, "AAAA", p2);
    assert_int_equal((plen + extra) % 4, 1);
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    /* Non-canonical last character: same bytes, other unused bits. 43 characters carry
     * 258 bits; the last two must be zero. */
    strcpy(t2, tok);
    char *last = t2 + n - 1;
    static const char alpha[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t v = (size_t)(strchr(alpha, *last) - alpha);
    assert_int_equal(v & 3, 0);
    *last = alpha[v | 1];
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);

    /* Over-long: a correctly signed token of CM_JWT_MAX + 1 characters is refused, one
     * of exactly CM_JWT_MAX accepted. */
    assert_true(token_of_len(CM_JWT_MAX + 1, t2));
    assert_int_equal(verify(t2), CM_JWT_EMALFORMED);
    assert_true(token_of_len(CM_JWT_MAX, t2));
    assert_int_equal(verify(t2), 0);
    /* Not NUL-terminated within CM_JWT_MAX + 1 bytes: never read further. */
    char *big = malloc(100000);
    memset(big, 'A', 100000 - 1);
    big[100000 - 1] = '\0';
    assert_int_equal(verify(big), CM_JWT_EMALFORMED);
    free(big);
}

static void test_sign_limits(void **state)
{
    (void)state;
    cm_jwt_claims_t c;
    char tok[CM_JWT_MAX], small[16];

    claims(&c);
    int n = cm_jwt_sign(key, keylen, &c, tok, sizeof(tok));
    assert_true(n > 0);
    assert_true(cm_jwt_sign(key, keylen, &c, small, sizeof(small)) < 0);
    assert_string_equal(small, "");
    assert_true(cm_jwt_sign(key, keylen, &c, tok, (size_t)n) < 0); /* no room for the NUL */
    assert_int_equal(cm_jwt_sign(key, keylen, &c, tok, (size_t)n + 1), n);
    assert_true(cm_jwt_sign(key, keylen, &c, tok, 0) < 0);
    assert_true(cm_jwt_sign(key, 0, &c, tok, sizeof(tok)) < 0); /* empty key */

    /* A field without its NUL, invalid UTF-8, or claims too big for CM_JWT_MAX. */
    memset(c.sub, 'x', sizeof(c.sub));
    assert_int_equal(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)), CM_JWT_ECLAIMS);
    static const char *const bad_utf8[] = {"\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80",
                                           "\xf4\x90\x80\x80", "\xe0\x80\xaf", "\x80"};
    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
        claims(&c);
        strcpy(c.sid, bad_utf8[i]);
        assert_int_equal(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)), CM_JWT_ECLAIMS);
    }
    claims(&c); /* 4 x 63 control characters escape to 6 bytes each */
    memset(c.sub, '\x01', sizeof(c.sub) - 1);
    memset(c.sid, '\x01', sizeof(c.sid) - 1);
    memset(c.jti, '\x01', sizeof(c.jti) - 1);
    assert_int_equal(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)), CM_JWT_ECLAIMS);
}

static void *verify_loop(void *arg)
{
    const char *tok = arg;
    cm_jwt_claims_t out;
    for (int i = 0; i < 2000; i++)
        if (cm_jwt_verify(key, keylen, tok, NOW, &out) != 0 || strcmp(out.sub, "usr_1") != 0)
            return (void *)1;
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    cm_jwt_claims_t c;
    char tok[CM_JWT_MAX];
    pthread_t th[4];
    void *res;

    claims(&c);
    assert_true(cm_jwt_sign(key, keylen, &c, tok, sizeof(tok)) > 0);
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, verify_loop, tok), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], &res), 0);
        assert_null(res);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_matches_independent_vector),
        cmocka_unit_test(test_rfc7515_vector), cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_bad_alg),       cmocka_unit_test(test_expired),
        cmocka_unit_test(test_bad_claims),    cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_sign_limits),   cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests_name("jwt", tests, NULL, NULL);
}
