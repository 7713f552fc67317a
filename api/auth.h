/* api/auth.h — who is calling, and how often: credentials resolved to a principal, and
 * the rate limit of the request, in one Redis round trip.
 *
 * Credentials (`Authorization: Bearer <c>`, or `?api_key=<c>` / `?token=<c>`):
 *   - a JWT access token (HS256, CONVEYOR_JWT_SECRET): checked locally (signature, alg,
 *     exp), then its session must not be revoked (Redis marker P rvk:<sid>);
 *   - an API key `ak_live_...`: looked up by its SHA-256 in Redis (P akey:<sha>, a cache
 *     of the api_keys table loaded on a miss; revocation writes a tombstone there);
 *   - the operator token (CONVEYOR_OPERATOR_TOKEN): owner "operator", admin, no limit.
 * Rate limits are fixed windows started by a bucket's first request (P rl:<bucket>:<id>,
 * INCR + PEXPIRE in the same Lua call as the credential check): per user for access
 * tokens, per key for API keys, per client IP for the unauthenticated routes that work. */
#ifndef API_AUTH_H
#define API_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define API_OWNER_MAX 64 /* owner ids, NUL included */
#define API_SID_MAX 64   /* session and key ids, NUL included */

typedef enum { API_ROLE_USER = 0, API_ROLE_ADMIN = 1 } api_role_t;

typedef enum {
    API_CRED_NONE = 0,
    API_CRED_OPERATOR,
    API_CRED_ACCESS, /* a JWT access token: a session of a user */
    API_CRED_APIKEY,
} api_cred_t;

/* The caller of one request. owner is the user id (the owner its jobs carry), or
 * "operator". */
typedef struct api_principal {
    char owner[API_OWNER_MAX];
    api_role_t role;
    api_cred_t cred;
    char sid[API_SID_MAX];    /* session id (API_CRED_ACCESS) or key id (API_CRED_APIKEY) */
    int64_t token_exp;        /* exp of the access token, s since the epoch */
    char key_sha[65];         /* SHA-256 (hex) of the API key presented */
} api_principal_t;

enum {
    API_AUTH_EMISSING = -1, /* no credential, or not "Bearer <token>" */
    API_AUTH_EINVALID = -2, /* a credential that is not valid */
};

#define API_KEY_PREFIX "ak_live_"
#define API_KEY_RAND 40 /* base62 characters after the prefix (~238 bits) */

/* Resolves an Authorization header value (borrowed; NULL when absent) into *out, as far
 * as it can without Redis: the operator token completely; an access token by signature,
 * alg and exp (its session may still be revoked); an API key by its form only (key_sha
 * set). Returns 0, API_AUTH_EMISSING or API_AUTH_EINVALID. Never logs the credential. */
int api_authenticate(const char *authorization, api_principal_t *out);

/* The same for a bare credential (from ?api_key= or ?token=). */
int api_authenticate_token(const char *token, api_principal_t *out);

/* Rate-limit buckets (the policy names of the RateLimit headers). */
typedef enum { API_RL_NONE = 0, API_RL_USER, API_RL_APIKEY, API_RL_AUTH, API_RL_IP } api_bucket_t;

/* 1 if s names the role ("user", "admin"), setting *role. */
int api_role_parse(const char *s, api_role_t *role);
const char *api_role_name(api_role_t role);

/* The Redis keys of the auth state (prefix = configured prefix + ":"). */
int api_key_revoked(char *out, size_t n, const char *prefix, const char *sid);
int api_key_apikey(char *out, size_t n, const char *prefix, const char *key_sha_hex);

#endif
