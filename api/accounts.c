/* api/accounts.c — sign-in (sessions, access and refresh tokens) and API keys. */
#include "api/accounts.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/gate.h"
#include "common/config.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/password.h"
#include "common/util.h"

#define REFRESH_PREFIX "rt_"
#define REFRESH_RAND 43  /* base62 characters (~256 bits) */
#define REFRESH_MAX 128  /* longest refresh token looked up */
#define KEY_NAME_MAX 100 /* characters */
#define KEY_SHOWN 12     /* characters of a key kept as its visible prefix */
#define KEYS_LIST_MAX 1000
#define API_KEYS_PER_USER 100 /* live (not revoked, not expired) keys a user may hold */

static const char bad_login[] = "invalid email or password";

static int unauthorized(api_req_t *r, const char *msg)
{
    return api_error(r, 401, "UNAUTHORIZED", NULL, NULL, "%s", msg);
}

/* Checks that body has only the named fields, each a string when present; required ones
 * must be. Returns 0 or -1 after sending 422. */
static int string_fields(api_req_t *r, json_t *body, const char *const *names, int required)
{
    const char *key = api_json_unknown_key(body, names);
    json_t *v;
    if (key) return api_field_error(r, key, "unknown field '%s'", key), -1;
    for (int i = 0; names[i]; i++) {
        v = json_object_get(body, names[i]);
        if (!v && required) return api_field_error(r, names[i], "%s is required", names[i]), -1;
        if (v && !json_is_string(v))
            return api_field_error(r, names[i], "%s must be a string", names[i]), -1;
    }
    return 0;
}

/* ---- tokens ---------------------------------------------------------------------- */

/* Sends 200 with a new access token for session sid of the user in res (API_USER_COLS
 * from col), with refresh token refresh. Returns the status. */
static int tokens_reply(api_req_t *r, const char *sid, const PGresult *res, int col,
                        const char *refresh)
{
    cm_jwt_claims_t c = {0};
    char token[CM_JWT_MAX];
    int64_t now = cm_now_ms() / 1000;
    const char *key = cm_cfg.jwt_secret;
    json_t *user = api_user_json(res, 0, col);

    snprintf(c.sub, sizeof(c.sub), "%s", PQgetvalue(res, 0, col));
    snprintf(c.role, sizeof(c.role), "%s", PQgetvalue(res, 0, col + 6));
    snprintf(c.sid, sizeof(c.sid), "%s", sid);
    c.iat = now;
    c.exp = now + cm_cfg.access_ttl_seconds;
    if (!user || cm_random_id(c.jti, sizeof(c.jti), "", CM_ID_RAND_LEN) != 0 ||
        cm_jwt_sign((const unsigned char *)key, strlen(key), &c, token, sizeof(token)) < 0) {
        json_decref(user);
        LOG_REQ_ERR(r->request_id, "cannot sign an access token");
        return api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
    }
    int st = api_reply(r, 200,
                       json_pack("{s:s,s:s,s:s,s:s,s:i,s:o}", "accessToken", token, "token",
                                 token, "refreshToken", refresh, "tokenType", "Bearer",
                                 "expiresIn", cm_cfg.access_ttl_seconds, "user", user),
                       NULL);
    OPENSSL_cleanse(token, sizeof(token));
    return st;
}

/* A new refresh token into out and its digest into hash. Returns 0 or -1. */
static int new_refresh(char out[64], char hash[65])
{
    if (cm_random_id(out, 64, REFRESH_PREFIX, REFRESH_RAND) != 0) return -1;
    cm_sha256_hex(out, strlen(out), hash);
    return 0;
}

static PGresult *exec(PGconn *pg, const char *sql, int n, const char *const *params)
{
    return PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
}

static int ok(const PGresult *res)
{
    ExecStatusType s = PQresultStatus(res);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* ---- register, login ------------------------------------------------------------- */

int api_auth_register(api_req_t *r)
{
    json_t *body;
    int st;
    if (api_read_json(r, 1, &body) != 0) return r->status;
    st = api_user_create(r, body, 0);
    json_decref(body);
    return st;
}

int api_auth_login(api_req_t *r)
{
    static const char *const fields[] = {"email", "password", NULL};
    json_t *body;
    PGconn *pg = NULL;
    PGresult *res = NULL;
    char sid[40], refresh[64], hash[65], ttl[16];
    const char *email, *pw;
    size_t pwlen;
    int st;

    if (api_read_json(r, 1, &body) != 0) return r->status;
    if (string_fields(r, body, fields, 1) != 0) goto sent;
    email = json_string_value(json_object_get(body, "email"));
    pw = json_string_value(json_object_get(body, "password"));
    pwlen = json_string_length(json_object_get(body, "password"));
    if (!(pg = api_db(r))) goto sent;
    res = exec(pg,
               "SELECT u.password_hash, " API_USER_COLS
               " FROM users u WHERE lower(u.email) = lower(btrim($1))",
               1, &email);
    if (!ok(res)) {
        st = api_db_error(r, pg, res);
        res = NULL;
        goto out;
    }
    if (PQntuples(res) != 1) {
        /* spend what a wrong password costs: the answer's timing says nothing either */
        cm_password_burn(pw, pwlen, (uint32_t)cm_cfg.argon2_iterations,
                         (uint32_t)cm_cfg.argon2_memory_kib);
        st = unauthorized(r, bad_login);
        goto out;
    }
    if (cm_password_verify(PQgetvalue(res, 0, 0), pw, pwlen) != 1 ||
        PQgetvalue(res, 0, 1 + 7)[0] != 't') {
        st = unauthorized(r, bad_login);
        goto out;
    }
    if (cm_random_id(sid, sizeof(sid), "ses_", CM_ID_RAND_LEN) != 0 ||
        new_refresh(refresh, hash) != 0) {
        st = api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
        goto out;
    }
    snprintf(ttl, sizeof(ttl), "%d", cm_cfg.refresh_ttl_seconds);
    {
        const char *p[] = {sid, PQgetvalue(res, 0, 1), ttl, hash};
        PGresult *ins = exec(
            pg,
            "WITH s AS (INSERT INTO sessions (id, user_id, expires_at) "
            "           VALUES ($1, $2, now() + $3::int * interval '1 second') RETURNING id) "
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) "
            "SELECT $4, id, now() + $3::int * interval '1 second' FROM s",
            4, p);
        if (!ok(ins)) {
            st = api_db_error(r, pg, ins);
            goto out;
        }
        PQclear(ins);
    }
    LOG_REQ_INFO(r->request_id, "user %s signed in (session %s)", PQgetvalue(res, 0, 1), sid);
    st = tokens_reply(r, sid, res, 1, refresh);
    OPENSSL_cleanse(refresh, sizeof(refresh));
out:
    PQclear(res);
    if (pg) cm_pg_release(r->pg, pg);
    json_decref(body);
    return st;
sent:
    st = r->status;
    goto out;
}

/* ---- refresh, logout ------------------------------------------------------------- */

int api_auth_refresh(api_req_t *r)
{
    static const char *const fields[] = {"refreshToken", NULL};
    json_t *body;
    PGconn *pg = NULL;
    PGresult *res = NULL, *x;
    char hash[65], refresh[64], newhash[65], ttl[16];
    const char *tok, *sid;
    int st, began = 0;

    if (api_read_json(r, 1, &body) != 0) return r->status;
    if (string_fields(r, body, fields, 1) != 0) goto sent;
    tok = json_string_value(json_object_get(body, "refreshToken"));
    if (strlen(tok) > REFRESH_MAX || strncmp(tok, REFRESH_PREFIX, strlen(REFRESH_PREFIX)) != 0) {
        st = unauthorized(r, "the refresh token is not valid");
        goto out;
    }
    cm_sha256_hex(tok, strlen(tok), hash);
    if (!(pg = api_db(r))) goto sent;
    if ((st = api_db_command(r, pg, "BEGIN")) != 0) goto out;
    began = 1;
    {
        const char *p[] = {hash};
        /* FOR UPDATE: two refreshes with one token run one after the other, and the second
         * sees the first's rotation (a reuse) */
        res = exec(pg,
                   "SELECT t.session_id, t.used_at IS NOT NULL, t.expires_at > now() AND "
                   "       s.revoked_at IS NULL AND u.is_active, " API_USER_COLS
                   " FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id "
                   " JOIN users u ON u.id = s.user_id WHERE t.token_hash = $1 "
                   " FOR UPDATE OF t, s",
                   1, p);
    }
    if (!ok(res)) {
        st = api_db_error(r, pg, res);
        res = NULL;
        goto out;
    }
    if (PQntuples(res) != 1) {
        st = unauthorized(r, "the refresh token is not valid");
        goto out;
    }
    sid = PQgetvalue(res, 0, 0);
    if (PQgetvalue(res, 0, 1)[0] == 't') {
        /* A rotated token again: stolen, or replayed. End the whole family. */
        const char *p[] = {sid};
        x = exec(pg,
                 "UPDATE sessions SET revoked_at = now(), revoke_reason = 'refresh token reuse' "
                 "WHERE id = $1 AND revoked_at IS NULL",
                 1, p);
        if (!ok(x)) {
            st = api_db_error(r, pg, x);
            goto out;
        }
        PQclear(x);
        char *sids[] = {(char *)sid};
        if (api_revoke_sessions(r, sids, 1) != 0) {
            st = api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                           "try again shortly");
            goto out;
        }
        began = 0;
        if ((st = api_db_command(r, pg, "COMMIT")) != 0) goto out;
        LOG_REQ_WARN(r->request_id, "refresh token reuse: session %s revoked", sid);
        st = unauthorized(r, "this refresh token was already used; the session is revoked");
        goto out;
    }
    if (PQgetvalue(res, 0, 2)[0] != 't') {
        st = unauthorized(r, "the refresh token has expired or its session has ended");
        goto out;
    }
    if (new_refresh(refresh, newhash) != 0) {
        st = api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
        goto out;
    }
    snprintf(ttl, sizeof(ttl), "%d", cm_cfg.refresh_ttl_seconds);
    {
        const char *p[] = {hash, newhash, sid, ttl};
        x = exec(pg,
                 "WITH used AS (UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1), "
                 "     s AS (UPDATE sessions SET expires_at = now() + $4::int * interval '1 second' "
                 "           WHERE id = $3) "
                 "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) "
                 "VALUES ($2, $3, now() + $4::int * interval '1 second')",
                 4, p);
        if (!ok(x)) {
            st = api_db_error(r, pg, x);
            goto out;
        }
        PQclear(x);
    }
    began = 0;
    if ((st = api_db_command(r, pg, "COMMIT")) != 0) goto out;
    st = tokens_reply(r, sid, res, 3, refresh);
    OPENSSL_cleanse(refresh, sizeof(refresh));
out:
    if (began) PQclear(PQexec(pg, "ROLLBACK"));
    PQclear(res);
    if (pg) cm_pg_release(r->pg, pg);
    json_decref(body);
    return st;
sent:
    st = r->status;
    goto out;
}

int api_auth_logout(api_req_t *r)
{
    PGconn *pg;
    PGresult *res;
    const char *p[] = {r->who.sid, r->who.owner};
    char *sids[] = {r->who.sid};

    if (r->who.cred != API_CRED_ACCESS)
        return api_error(r, 400, "INVALID_REQUEST", NULL, NULL,
                         "logout ends a session signed in with an access token; an API key "
                         "is revoked with DELETE /v1/auth/api-keys/{id}");
    if (!(pg = api_db(r))) return r->status;
    res = exec(pg,
               "UPDATE sessions SET revoked_at = now(), revoke_reason = 'logout' "
               "WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
               2, p);
    if (!ok(res)) {
        int st = api_db_error(r, pg, res);
        cm_pg_release(r->pg, pg);
        return st;
    }
    PQclear(res);
    cm_pg_release(r->pg, pg);
    if (api_revoke_sessions(r, sids, 1) != 0)
        return api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                         "try again shortly");
    LOG_REQ_INFO(r->request_id, "session %s ended", r->who.sid);
    return api_reply(r, 204, NULL, NULL);
}

/* ---- API keys -------------------------------------------------------------------- */

/* Keys are managed with a session, not with a key (a leaked key cannot mint more). */
static int need_session(api_req_t *r)
{
    if (r->who.cred == API_CRED_ACCESS) return 0;
    return api_error(r, 403, "FORBIDDEN", NULL, NULL,
                     "API keys are managed with an access token: sign in with "
                     "POST /v1/auth/login");
}

/* The key object of row (columns id, name, prefix, expires ms, last used ms, created ms,
 * expired). */
static json_t *key_json(const PGresult *res, int row)
{
    json_t *o = json_object();
    const char *const names[] = {"expiresAt", "lastUsedAt", "createdAt"};
    json_object_set_new(o, "id", json_string(PQgetvalue(res, row, 0)));
    json_object_set_new(o, "name", PQgetisnull(res, row, 1) ? json_null()
                                                            : json_string(PQgetvalue(res, row, 1)));
    json_object_set_new(o, "prefix", json_string(PQgetvalue(res, row, 2)));
    json_object_set_new(o, "status",
                        json_string(PQgetvalue(res, row, 6)[0] == 't' ? "expired" : "active"));
    for (int i = 0; i < 3; i++) {
        char t[40];
        if (PQgetisnull(res, row, 3 + i)) {
            json_object_set_new(o, names[i], json_null());
            continue;
        }
        cm_format_time(strtoll(PQgetvalue(res, row, 3 + i), NULL, 10), t, sizeof(t));
        json_object_set_new(o, names[i], json_string(t));
    }
    return o;
}

#define KEY_COLS                                                                          \
    "id, name, prefix, (extract(epoch from expires_at) * 1000)::bigint, "                 \
    "(extract(epoch from last_used_at) * 1000)::bigint, "                                 \
    "(extract(epoch from created_at) * 1000)::bigint, "                                   \
    "expires_at IS NOT NULL AND expires_at <= now()"

int api_keys_create(api_req_t *r)
{
    json_t *body = NULL, *v, *out;
    const char *key, *name = NULL;
    char id[40], secret[64], hash[65], shown[KEY_SHOWN + 1], exp[24] = "";
    int64_t exp_ms = 0;
    PGconn *pg = NULL;
    PGresult *res;
    int st, began = 0;

    if (need_session(r) || api_read_json(r, 0, &body) != 0) return r->status;
    if (body) {
        static const char *const fields[] = {"name", "expiresAt", NULL};
        if ((key = api_json_unknown_key(body, fields))) {
            st = api_field_error(r, key, "unknown field '%s'", key);
            goto out;
        }
        if ((v = json_object_get(body, "name")) && !json_is_null(v)) {
            size_t chars;
            if (!json_is_string(v)) {
                st = api_field_error(r, "name", "name must be a string or null");
                goto out;
            }
            name = json_string_value(v);
            chars = api_utf8_chars(name);
            if (chars == 0 || chars > KEY_NAME_MAX || memchr(name, '\0', json_string_length(v))) {
                st = api_field_error(r, "name", "name must be 1-%d characters", KEY_NAME_MAX);
                goto out;
            }
        }
        if ((v = json_object_get(body, "expiresAt")) && !json_is_null(v)) {
            if (!json_is_string(v) || api_parse_rfc3339(json_string_value(v), &exp_ms) != 0) {
                st = api_field_error(r, "expiresAt",
                                     "expiresAt must be an RFC 3339 date-time or null");
                goto out;
            }
            if (exp_ms <= cm_now_ms()) {
                st = api_field_error(r, "expiresAt", "expiresAt must be in the future");
                goto out;
            }
            snprintf(exp, sizeof(exp), "%lld", (long long)exp_ms);
        }
    }
    if (cm_random_id(id, sizeof(id), "key_", CM_ID_RAND_LEN) != 0 ||
        cm_random_id(secret, sizeof(secret), API_KEY_PREFIX, API_KEY_RAND) != 0) {
        st = api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
        goto out;
    }
    cm_sha256_hex(secret, strlen(secret), hash);
    memcpy(shown, secret, KEY_SHOWN);
    shown[KEY_SHOWN] = '\0';
    if (!(pg = api_db(r))) goto sent;
    if ((st = api_db_command(r, pg, "BEGIN")) != 0) goto out;
    began = 1;
    {
        /* the user's row locked: concurrent creations count one after the other */
        const char *p[] = {r->who.owner};
        res = exec(pg, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", 1, p);
        if (ok(res)) {
            PQclear(res);
            res = exec(pg,
                       "SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL "
                       "AND (expires_at IS NULL OR expires_at > now())",
                       1, p);
        }
        if (!ok(res)) {
            st = api_db_error(r, pg, res);
            goto out;
        }
        long long live = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        if (live >= API_KEYS_PER_USER) {
            st = api_error(r, 409, "CONFLICT", json_pack("{s:i}", "limit", API_KEYS_PER_USER), NULL,
                           "a user holds at most %d live API keys: revoke one first",
                           API_KEYS_PER_USER);
            goto out;
        }
    }
    {
        const char *p[] = {id, r->who.owner, name, shown, hash, *exp ? exp : NULL};
        res = exec(pg,
                   "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, expires_at) "
                   "VALUES ($1, $2, $3, $4, $5, to_timestamp($6::bigint / 1000.0)) "
                   "RETURNING " KEY_COLS,
                   6, p);
    }
    if (!ok(res)) {
        st = api_db_error(r, pg, res);
        goto out;
    }
    began = 0;
    if ((st = api_db_command(r, pg, "COMMIT")) != 0) {
        PQclear(res);
        goto out;
    }
    out = key_json(res, 0);
    PQclear(res);
    json_object_set_new(out, "key", json_string(secret)); /* wiped at out */
    LOG_REQ_INFO(r->request_id, "api key %s created for %s", id, r->who.owner);
    st = api_reply(r, 201, out, NULL);
out:
    if (began) PQclear(PQexec(pg, "ROLLBACK"));
    if (pg) cm_pg_release(r->pg, pg);
    OPENSSL_cleanse(secret, sizeof(secret));
    json_decref(body);
    return st;
sent:
    st = r->status;
    goto out;
}

int api_keys_list(api_req_t *r)
{
    const char *p[] = {r->who.owner};
    PGconn *pg;
    PGresult *res;
    json_t *data;
    int st;

    if (need_session(r) || !(pg = api_db(r))) return r->status;
    res = exec(pg,
               "SELECT " KEY_COLS " FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL "
               "ORDER BY created_at DESC, id DESC LIMIT 1001",
               1, p);
    if (!ok(res)) {
        st = api_db_error(r, pg, res);
    } else {
        int n = PQntuples(res), more = n > KEYS_LIST_MAX;
        data = json_array();
        for (int i = 0; i < n && i < KEYS_LIST_MAX; i++) json_array_append_new(data, key_json(res, i));
        PQclear(res);
        st = api_reply(r, 200, json_pack("{s:o,s:b}", "data", data, "hasMore", more), NULL);
    }
    cm_pg_release(r->pg, pg);
    return st;
}

int api_keys_delete(api_req_t *r)
{
    const char *p[] = {r->param, r->who.owner};
    PGconn *pg;
    PGresult *res;
    int st;

    if (need_session(r) || !(pg = api_db(r))) return r->status;
    res = exec(pg, "SELECT key_hash FROM api_keys WHERE id = $1 AND user_id = $2 "
                   "AND revoked_at IS NULL",
               2, p);
    if (!ok(res)) {
        st = api_db_error(r, pg, res);
    } else if (PQntuples(res) != 1) {
        PQclear(res);
        st = api_error(r, 404, "NOT_FOUND", NULL, NULL, "API key not found");
    } else if (api_apikey_cache(r, PQgetvalue(res, 0, 0), NULL, NULL, API_ROLE_USER, 0, 1)) {
        /* The gate's cache is told first (a tombstone wins over a racing load, see
         * akey_put.lua): if Redis cannot hear it, nothing is revoked yet. */
        PQclear(res);
        st = api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                       "cannot revoke the key now; try again shortly");
    } else {
        char sha[65], *shap = sha;
        snprintf(sha, sizeof(sha), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        res = exec(pg, "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND user_id = $2",
                   2, p);
        if (!ok(res)) {
            st = api_db_error(r, pg, res);
            /* not revoked after all: the next use reads the key from PostgreSQL again */
            if (api_apikey_forget(r, &shap, 1) != 0)
                LOG_REQ_ERR(r->request_id, "api key %s: its revocation failed and its tombstone "
                                           "stays in Redis until it expires", r->param);
        } else {
            PQclear(res);
            LOG_REQ_INFO(r->request_id, "api key %s revoked", r->param);
            st = api_reply(r, 204, NULL, NULL);
        }
    }
    cm_pg_release(r->pg, pg);
    return st;
}

int api_keys_forget_user(api_req_t *r, PGconn *pg, const char *user, int tombstone)
{
    const char *p[] = {user};
    PGresult *res = exec(pg, "SELECT key_hash FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL",
                         1, p);
    int rc = 0, n;

    if (!ok(res)) {
        LOG_REQ_ERR(r->request_id, "listing a user's keys: %s", PQerrorMessage(pg));
        PQclear(res);
        return -1;
    }
    n = PQntuples(res);
    for (int i = 0; i < n && rc == 0; i++) {
        char *sha = PQgetvalue(res, i, 0);
        rc = tombstone ? api_apikey_cache(r, sha, NULL, NULL, API_ROLE_USER, 0, 1)
                       : api_apikey_forget(r, &sha, 1);
    }
    PQclear(res);
    return rc;
}

int api_keys_recache_user(api_req_t *r, PGconn *pg, const char *user)
{
    const char *p[] = {user};
    PGresult *res = exec(pg,
                         "SELECT k.key_hash, k.id, u.role, "
                         "       coalesce((extract(epoch from k.expires_at) * 1000)::bigint, 0) "
                         "FROM api_keys k JOIN users u ON u.id = k.user_id "
                         "WHERE k.user_id = $1 AND k.revoked_at IS NULL AND u.is_active "
                         "  AND (k.expires_at IS NULL OR k.expires_at > now())",
                         1, p);
    int rc = 0;

    if (!ok(res)) {
        LOG_REQ_ERR(r->request_id, "listing a user's keys: %s", PQerrorMessage(pg));
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
        api_role_t role = API_ROLE_USER;
        api_role_parse(PQgetvalue(res, i, 2), &role);
        rc = api_apikey_cache(r, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), user, role,
                              strtoll(PQgetvalue(res, i, 3), NULL, 10), 1);
    }
    if (rc) LOG_REQ_ERR(r->request_id, "caching a user's keys with the new role failed");
    PQclear(res);
    return rc;
}
