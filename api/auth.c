/* api/auth.c — credentials: the checks that need nothing but the credential. */
#include "api/auth.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/jwt.h"
#include "common/util.h"

#define OPERATOR_OWNER "operator"

static unsigned char operator_digest[32];

/* The last access token this thread verified (see api_authenticate_token). */
static _Thread_local struct {
    char tok[CM_JWT_MAX + 1];
    size_t len;
    const char *key; /* the secret it was verified with */
    api_principal_t who;
} last;
static pthread_once_t operator_once = PTHREAD_ONCE_INIT;

static void digest_operator_token(void)
{
    cm_sha256(cm_cfg.operator_token, strlen(cm_cfg.operator_token), operator_digest);
}

int api_role_parse(const char *s, api_role_t *role)
{
    if (!s) return 0;
    if (strcmp(s, "user") == 0) *role = API_ROLE_USER;
    else if (strcmp(s, "admin") == 0) *role = API_ROLE_ADMIN;
    else return 0;
    return 1;
}

const char *api_role_name(api_role_t role) { return role == API_ROLE_ADMIN ? "admin" : "user"; }

int api_key_revoked(char *out, size_t n, const char *prefix, const char *sid)
{
    int k = snprintf(out, n, "%srvk:%s", prefix, sid);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

int api_key_apikey(char *out, size_t n, const char *prefix, const char *key_sha_hex)
{
    int k = snprintf(out, n, "%sakey:%s", prefix, key_sha_hex);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

/* 1 if tok has the form of an API key: the prefix and API_KEY_RAND base62 characters. */
static int apikey_form(const char *tok)
{
    size_t pl = strlen(API_KEY_PREFIX), i;
    if (strncmp(tok, API_KEY_PREFIX, pl) != 0) return 0;
    for (i = 0; tok[pl + i]; i++) {
        char c = tok[pl + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
            return 0;
    }
    return i == API_KEY_RAND;
}

int api_authenticate_token(const char *tok, api_principal_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!tok || !*tok || strchr(tok, ' ')) return API_AUTH_EMISSING;
    if (strncmp(tok, API_KEY_PREFIX, strlen(API_KEY_PREFIX)) == 0) {
        if (!apikey_form(tok)) return API_AUTH_EINVALID;
        cm_sha256_hex(tok, strlen(tok), out->key_sha);
        out->cred = API_CRED_APIKEY;
        return 0;
    }
    if (strchr(tok, '.')) { /* a JWT has two dots; the operator token has none */
        cm_jwt_claims_t c;
        const char *key = cm_cfg.jwt_secret ? cm_cfg.jwt_secret : "";
        int64_t now = cm_now_ms() / 1000;
        size_t len = strlen(tok);
        if (strlen(key) < 32) return API_AUTH_EINVALID; /* the api refuses to start so */
        /* A keep-alive client sends the same token on every request of its connection,
         * which one thread serves: the last token this thread verified is kept (compared
         * in constant time; exp still checked). */
        if (len == last.len && key == last.key && now < last.who.token_exp &&
            CRYPTO_memcmp(tok, last.tok, len) == 0) {
            *out = last.who;
            return 0;
        }
        if (cm_jwt_verify((const unsigned char *)key, strlen(key), tok, now, &c) != 0)
            return API_AUTH_EINVALID;
        if (!api_role_parse(c.role, &out->role) || !*c.sub || !*c.sid ||
            strlen(c.sub) >= sizeof(out->owner) || strlen(c.sid) >= sizeof(out->sid))
            return API_AUTH_EINVALID;
        memcpy(out->owner, c.sub, strlen(c.sub) + 1);
        memcpy(out->sid, c.sid, strlen(c.sid) + 1);
        out->token_exp = c.exp;
        out->cred = API_CRED_ACCESS;
        if (len < sizeof(last.tok)) {
            memcpy(last.tok, tok, len + 1);
            last.len = len;
            last.key = key;
            last.who = *out;
        }
        return 0;
    }
    if (!cm_cfg.operator_token || !*cm_cfg.operator_token) return API_AUTH_EINVALID;
    pthread_once(&operator_once, digest_operator_token);
    if (!cm_secure_equal_digest(tok, operator_digest)) return API_AUTH_EINVALID;
    snprintf(out->owner, sizeof(out->owner), "%s", OPERATOR_OWNER);
    out->role = API_ROLE_ADMIN;
    out->cred = API_CRED_OPERATOR;
    return 0;
}

int api_authenticate(const char *authorization, api_principal_t *out)
{
    const char *tok;

    memset(out, 0, sizeof(*out));
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return API_AUTH_EMISSING;
    for (tok = authorization + 7; *tok == ' '; tok++) {}
    return api_authenticate_token(tok, out);
}
