/* common/jwt.h — HS256 JSON Web Tokens (RFC 7519) with OpenSSL's HMAC and jansson.
 *
 * Only what Conveyor issues is accepted: one algorithm, one issuer, a fixed set of
 * claims. Both functions are thread-safe, keep no state and allocate nothing but
 * jansson's parse (verify) — they run on every authenticated request. */
#ifndef CM_JWT_H
#define CM_JWT_H

#include <stddef.h>
#include <stdint.h>

#define CM_JWT_MAX 1024 /* longest token signed or accepted */

typedef struct cm_jwt_claims {
    char sub[64];     /* user id */
    char role[16];    /* "user" | "admin" */
    char sid[64];     /* session id */
    char jti[64];     /* token id */
    int64_t iat, exp; /* seconds since the epoch */
} cm_jwt_claims_t;

enum {
    CM_JWT_EMALFORMED = -1, /* not three canonical base64url parts, or a header that is not JSON */
    CM_JWT_EALG = -2,       /* header alg is not exactly "HS256" (or typ/crit unacceptable) */
    CM_JWT_ESIG = -3,       /* signature does not match (or the key is empty) */
    CM_JWT_EEXPIRED = -4,   /* exp <= now */
    CM_JWT_ECLAIMS = -5,    /* payload claims missing, mistyped, too long, or iss != "conveyor" */
    CM_JWT_ENOMEM = -6,     /* out of memory, or (sign) out too small */
};

/* Signs the claims in c (borrowed) with key: header {"alg":"HS256","typ":"JWT"}, payload
 * {"iss":"conveyor","sub","role","sid","jti","iat","exp"} compact. Returns the token
 * length (< outlen, NUL-terminated in out) or a negative CM_JWT_E*: ECLAIMS if a string
 * is not NUL-terminated in its field, is not valid UTF-8, or the token would exceed
 * CM_JWT_MAX; ENOMEM if out is too small; ESIG if keylen is 0. */
int cm_jwt_sign(const unsigned char *key, size_t keylen, const cm_jwt_claims_t *c, char *out,
                size_t outlen);

/* Verifies token: exactly three base64url parts (no '=' padding, canonical trailing
 * bits), total length <= CM_JWT_MAX; header JSON object whose "alg" is exactly "HS256"
 * (anything else incl. "none"/"HS512"/missing -> CM_JWT_EALG; "typ" if present must be
 * "JWT" and "crit" must be absent, else EALG); signature = HMAC-SHA256(key, part1 "."
 * part2) compared in constant time (CRYPTO_memcmp) -> else CM_JWT_ESIG; the signature is
 * checked BEFORE the payload is parsed; payload JSON object with string sub/role/sid/jti
 * fitting the struct, integer iat and exp (json integers only), iss == "conveyor" -> else
 * CM_JWT_ECLAIMS; exp <= now_s -> CM_JWT_EEXPIRED. Values of role, sub... are not judged
 * here: the caller decides what it accepts. Fills *out only on success (0). */
int cm_jwt_verify(const unsigned char *key, size_t keylen, const char *token, int64_t now_s,
                  cm_jwt_claims_t *out);

#endif
