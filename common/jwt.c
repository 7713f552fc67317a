/* common/jwt.c — HS256 JSON Web Tokens: base64url, HMAC-SHA256, a fixed claim set. */
#define _POSIX_C_SOURCE 200809L
#include "common/jwt.h"

#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#define SIG_LEN 32     /* HMAC-SHA256 tag */
#define SIG_B64_LEN 43 /* its base64url spelling, unpadded */
#define ISSUER "conveyor"

static const char header_json[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static const char b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* ---- base64url (RFC 4648 §5, no padding) ---------------------------------------- */

static size_t b64url_len(size_t n) { return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0); }

/* Encodes n bytes of in into out, which has room for b64url_len(n) characters (no NUL). */
static void b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i = 0, o = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_chars[v >> 18];
        out[o++] = b64url_chars[(v >> 12) & 63];
        out[o++] = b64url_chars[(v >> 6) & 63];
        out[o++] = b64url_chars[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url_chars[v >> 18];
        out[o++] = b64url_chars[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url_chars[v >> 18];
        out[o++] = b64url_chars[(v >> 12) & 63];
        out[o++] = b64url_chars[(v >> 6) & 63];
    }
}

/* Value of a base64url character, or -1 (this also refuses '=' and the '+' '/' of
 * plain base64). Branches on the character are fine: no part of a token is secret. */
static int b64url_val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '-') return 62;
    if (ch == '_') return 63;
    return -1;
}

/* Decodes n characters of in into out (room for cap bytes). Returns the byte count or
 * -1 for a character outside the alphabet, an impossible length (n % 4 == 1), a result
 * larger than cap, or non-zero unused trailing bits — those would give one signature
 * several spellings, so the token string would not identify the token. */
static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;

    if (n % 4 == 1 || n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap || n > INT_MAX) return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) return -1; /* only the 0, 2 or 4 unused bits are left in acc */
    return (int)o;
}

/* 1 if the n characters at in could be an unpadded base64url string. */
static int b64url_valid(const char *in, size_t n)
{
    if (n % 4 == 1) return 0;
    for (size_t i = 0; i < n; i++)
        if (b64url_val((unsigned char)in[i]) < 0) return 0;
    return 1;
}

/* ---- payload writing (sign) ------------------------------------------------------ */

typedef struct {
    char *p;
    size_t len, cap;
    int err; /* set once anything did not fit or could not be encoded */
} wbuf_t;

static void put(wbuf_t *w, const char *s, size_t n)
{
    if (w->err || n > w->cap - w->len) {
        w->err = 1;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void puts_(wbuf_t *w, const char *s) { put(w, s, strlen(s)); }

/* Length (1-4) of the well-formed UTF-8 sequence at s, or 0. jansson refuses overlong
 * forms, surrogates and code points past U+10FFFF, so sign must not emit them either.
 * s is NUL-terminated: a NUL is never a continuation byte, so this stops at it. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n;
    uint32_t cp;

    if (c < 0x80) return 1;
    if (c < 0xC2) return 0; /* a continuation byte, or an overlong 2-byte lead */
    if (c < 0xE0) {
        n = 2;
        cp = c & 0x1F;
    } else if (c < 0xF0) {
        n = 3;
        cp = c & 0x0F;
    } else if (c < 0xF5) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Appends "key":"value" (with a leading comma) escaping value as JSON. value must be
 * NUL-terminated within cap bytes and valid UTF-8, else w->err is set. */
static void put_str(wbuf_t *w, const char *key, const char *value, size_t cap)
{
    const unsigned char *s = (const unsigned char *)value;
    size_t end = strnlen(value, cap);

    if (end == cap) {
        w->err = 1;
        return;
    }
    put(w, ",\"", 2);
    puts_(w, key);
    put(w, "\":\"", 3);
    for (size_t i = 0; i < end && !w->err;) {
        char esc[8];
        size_t n;
        if (s[i] == '"' || s[i] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)s[i];
            put(w, esc, 2);
            i++;
        } else if (s[i] < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", s[i]);
            put(w, esc, 6);
            i++;
        } else if ((n = utf8_len(s + i)) == 0) {
            w->err = 1;
        } else {
            put(w, (const char *)s + i, n);
            i += n;
        }
    }
    put(w, "\"", 1);
}

static void put_int(wbuf_t *w, const char *key, int64_t v)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%" PRId64, v);
    put(w, ",\"", 2);
    puts_(w, key);
    put(w, "\":", 2);
    put(w, num, (size_t)n);
}

/* HMAC-SHA256 of data into mac. Returns 0, or -1 (empty key, or OpenSSL failed). An empty
 * key is refused so a missing secret can neither sign nor verify anything. */
static int hs256(const unsigned char *key, size_t keylen, const void *data, size_t n,
                 unsigned char mac[SIG_LEN])
{
    unsigned int maclen = 0;
    if (!key || keylen == 0 || keylen > INT_MAX) return -1;
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, n, mac, &maclen) || maclen != SIG_LEN)
        return -1;
    return 0;
}

int cm_jwt_sign(const unsigned char *key, size_t keylen, const cm_jwt_claims_t *c, char *out,
                size_t outlen)
{
    char payload[CM_JWT_MAX];
    unsigned char mac[SIG_LEN];
    wbuf_t w = {payload, 0, sizeof(payload), 0};
    size_t hlen, plen, total, n;
    int rc;

    if (!out || outlen == 0) return CM_JWT_ENOMEM;
    out[0] = '\0'; /* a failed sign leaves an empty string, never half a token */
    if (!c) return CM_JWT_ECLAIMS;
    puts_(&w, "{\"iss\":\"" ISSUER "\"");
    put_str(&w, "sub", c->sub, sizeof(c->sub));
    put_str(&w, "role", c->role, sizeof(c->role));
    put_str(&w, "sid", c->sid, sizeof(c->sid));
    put_str(&w, "jti", c->jti, sizeof(c->jti));
    put_int(&w, "iat", c->iat);
    put_int(&w, "exp", c->exp);
    put(&w, "}", 1);
    if (w.err) return CM_JWT_ECLAIMS;

    hlen = b64url_len(sizeof(header_json) - 1);
    plen = b64url_len(w.len);
    total = hlen + 1 + plen + 1 + SIG_B64_LEN;
    if (total > CM_JWT_MAX) return CM_JWT_ECLAIMS; /* verify would refuse it */
    if (total >= outlen) return CM_JWT_ENOMEM;

    b64url_encode((const unsigned char *)header_json, sizeof(header_json) - 1, out);
    out[hlen] = '.';
    b64url_encode((const unsigned char *)payload, w.len, out + hlen + 1);
    n = hlen + 1 + plen;
    if (hs256(key, keylen, out, n, mac) != 0) {
        rc = CM_JWT_ESIG;
        goto fail;
    }
    out[n] = '.';
    b64url_encode(mac, SIG_LEN, out + n + 1);
    out[total] = '\0';
    return (int)total;
fail:
    out[0] = '\0';
    return rc;
}

/* ---- verify ---------------------------------------------------------------------- */

/* Parses n bytes of buf as a JSON object, refusing duplicate keys (so no two readers can
 * see different values of one claim). NULL if it is not one; *oom says why. */
static json_t *parse_object(const unsigned char *buf, int n, int *oom)
{
    json_error_t err;
    json_t *j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &err);
    *oom = !j && json_error_code(&err) == json_error_out_of_memory;
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* Copies the string member k of o into dst (cap bytes with the NUL). Returns 0 or -1 if
 * it is missing, not a string, or too long. jansson refuses "\u0000" unless asked, so
 * the value has no NUL inside and its length is the C string's. */
static int get_str(json_t *o, const char *k, char *dst, size_t cap)
{
    json_t *v = json_object_get(o, k);
    size_t n;
    if (!json_is_string(v)) return -1;
    n = json_string_length(v);
    if (n >= cap) return -1;
    memcpy(dst, json_string_value(v), n + 1);
    return 0;
}

/* Reads the integer member k of o; reals such as 1.5 or 1e3 are refused. */
static int get_int(json_t *o, const char *k, int64_t *dst)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) return -1;
    *dst = (int64_t)json_integer_value(v);
    return 0;
}

/* 1 if string member k of o is exactly want. */
static int str_is(json_t *o, const char *k, const char *want)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           memcmp(json_string_value(v), want, strlen(want)) == 0;
}

int cm_jwt_verify(const unsigned char *key, size_t keylen, const char *token, int64_t now_s,
                  cm_jwt_claims_t *out)
{
    /* A part decodes to at most 3/4 of its length: CM_JWT_MAX bytes hold any of them. */
    unsigned char hbuf[CM_JWT_MAX], pbuf[CM_JWT_MAX], sig[SIG_LEN], mac[SIG_LEN];
    const char *d1, *d2, *part3;
    size_t len, n1, n2, n3;
    int hn, pn, rc, oom;
    json_t *hdr = NULL, *pl = NULL;
    cm_jwt_claims_t c;

    if (!token || !out) return CM_JWT_EMALFORMED;
    len = strnlen(token, CM_JWT_MAX + 1);
    if (len > CM_JWT_MAX) return CM_JWT_EMALFORMED;
    d1 = memchr(token, '.', len);
    if (!d1) return CM_JWT_EMALFORMED;
    d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token));
    if (!d2) return CM_JWT_EMALFORMED;
    part3 = d2 + 1;
    n1 = (size_t)(d1 - token);
    n2 = (size_t)(d2 - d1 - 1);
    n3 = len - (size_t)(part3 - token);
    if (memchr(part3, '.', n3) || n1 == 0 || n2 == 0) return CM_JWT_EMALFORMED;

    /* Every part must be well-formed before anything is judged, so a mangled token reads
     * as malformed however it was mangled. The signature may be empty until alg is known:
     * an alg "none" token must say EALG. */
    hn = b64url_decode(token, n1, hbuf, sizeof(hbuf));
    pn = b64url_decode(d1 + 1, n2, pbuf, sizeof(pbuf));
    if (hn < 0 || pn < 0 || !b64url_valid(part3, n3)) return CM_JWT_EMALFORMED;

    if (!(hdr = parse_object(hbuf, hn, &oom))) {
        rc = oom ? CM_JWT_ENOMEM : CM_JWT_EMALFORMED;
        goto out;
    }
    /* Exactly our algorithm: no "none", no other HMAC, no case games. A "crit" header
     * asks us to understand extensions we do not implement (RFC 7515 §4.1.11). */
    if (!str_is(hdr, "alg", "HS256") ||
        (json_object_get(hdr, "typ") && !str_is(hdr, "typ", "JWT")) ||
        json_object_get(hdr, "crit")) {
        rc = CM_JWT_EALG;
        goto out;
    }
    if (n3 != SIG_B64_LEN || b64url_decode(part3, n3, sig, sizeof(sig)) != SIG_LEN) {
        rc = CM_JWT_EMALFORMED;
        goto out;
    }
    if (hs256(key, keylen, token, n1 + 1 + n2, mac) != 0 ||
        CRYPTO_memcmp(mac, sig, SIG_LEN) != 0) {
        rc = CM_JWT_ESIG;
        goto out;
    }

    /* Authentic from here on: only now is the payload worth parsing. */
    if (!(pl = parse_object(pbuf, pn, &oom))) {
        rc = oom ? CM_JWT_ENOMEM : CM_JWT_ECLAIMS;
        goto out;
    }
    if (!str_is(pl, "iss", ISSUER) ||
        get_str(pl, "sub", c.sub, sizeof(c.sub)) != 0 ||
        get_str(pl, "role", c.role, sizeof(c.role)) != 0 ||
        get_str(pl, "sid", c.sid, sizeof(c.sid)) != 0 ||
        get_str(pl, "jti", c.jti, sizeof(c.jti)) != 0 || get_int(pl, "iat", &c.iat) != 0 ||
        get_int(pl, "exp", &c.exp) != 0) {
        rc = CM_JWT_ECLAIMS;
        goto out;
    }
    if (c.exp <= now_s) {
        rc = CM_JWT_EEXPIRED;
        goto out;
    }
    *out = c;
    rc = 0;
out:
    json_decref(pl);
    json_decref(hdr);
    return rc;
}
