/* api/gate.c — authentication and rate limits per request. */
#include "api/gate.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/route.h"
#include "common/config.h"
#include "common/embed.h"
#include "common/log.h"
#include "common/util.h"

#define ACQUIRE_MS 2000
#define AKEY_TTL_MS 600000 /* a cached key is re-read from PostgreSQL after this */

extern const struct cm_embedded api_lua_scripts[];

enum { S_AKEY_PUT, S_GATE, S_COUNT };
static const char *const script_names[S_COUNT] = {"akey_put", "gate"};
static cm_script_t scripts[S_COUNT];
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void load_scripts(void)
{
    for (int i = 0; i < S_COUNT; i++) cm_script_load(api_lua_scripts, script_names[i], &scripts[i]);
}

static redisReply *eval(q_conn_t *q, int id, int nkeys, int argc, const char *const *args)
{
    pthread_once(&scripts_once, load_scripts);
    redisReply *r = q_eval(q, scripts[id].sha, scripts[id].src, nkeys, argc, args);
    if (r && r->type == REDIS_REPLY_ERROR) {
        LOG_ERR("redis script %s: %s", script_names[id], r->str);
        freeReplyObject(r);
        r = NULL;
    }
    return r;
}

/* ---- revocation and the key cache ------------------------------------------------ */

void api_auth_channel(char *out, size_t n, const char *prefix)
{
    snprintf(out, n, "%sch:auth", prefix);
}

/* Tells every api process (this one at once) to forget the credentials it knows. */
static int announce(api_req_t *r)
{
    char ch[160];
    redisReply *x;
    int ok;

    if (r->auth) api_authcache_invalidate(r->auth);
    api_auth_channel(ch, sizeof(ch), q_conn_prefix(r->q));
    x = q_command(r->q, "PUBLISH %s revoked", ch);
    ok = x && x->type == REDIS_REPLY_INTEGER;
    freeReplyObject(x);
    return ok ? 0 : -1;
}

int api_revoke_sessions(api_req_t *r, char *const *sids, int n)
{
    /* an access token lives at most access_ttl: so long must its marker */
    long long ttl = (long long)cm_cfg.access_ttl_seconds + 60;
    char key[160];
    for (int i = 0; i < n; i++) {
        if (api_key_revoked(key, sizeof(key), q_conn_prefix(r->q), sids[i]) != 0) return -1;
        redisReply *x = q_command(r->q, "SET %s 1 EX %lld", key, ttl);
        int ok = x && x->type == REDIS_REPLY_STATUS;
        freeReplyObject(x);
        if (!ok) return -1;
    }
    return n ? announce(r) : 0;
}

/* Writes the gate's Redis record of an API key (see akey_put.lua). Returns 0 or -1. */
static int put_key(q_conn_t *q, const char *key_sha, const char *id, const char *user,
                   api_role_t role, int64_t exp_ms, int force)
{
    char key[160], exp[32], ttl[32];
    if (api_key_apikey(key, sizeof(key), q_conn_prefix(q), key_sha) != 0) return -1;
    snprintf(exp, sizeof(exp), "%lld", (long long)(id ? exp_ms : 0));
    snprintf(ttl, sizeof(ttl), "%d", AKEY_TTL_MS);
    const char *args[] = {key, id ? id : "-", user ? user : "", api_role_name(role), exp, ttl,
                          force ? "1" : "0"};
    redisReply *x = eval(q, S_AKEY_PUT, 1, 7, args);
    int ok = x && x->type == REDIS_REPLY_INTEGER;
    freeReplyObject(x);
    return ok ? 0 : -1;
}

int api_apikey_cache(api_req_t *r, const char *key_sha, const char *id, const char *user,
                     api_role_t role, int64_t exp_ms, int force)
{
    if (put_key(r->q, key_sha, id, user, role, exp_ms, force) != 0) return -1;
    return force ? announce(r) : 0;
}

int api_apikey_forget(api_req_t *r, char *const *key_shas, int n)
{
    char key[160];
    for (int i = 0; i < n; i++) {
        if (api_key_apikey(key, sizeof(key), q_conn_prefix(r->q), key_shas[i]) != 0) return -1;
        redisReply *x = q_command(r->q, "DEL %s", key);
        int ok = x && x->type == REDIS_REPLY_INTEGER;
        freeReplyObject(x);
        if (!ok) return -1;
    }
    return n ? announce(r) : 0;
}

/* Reads the API key r->who.key_sha from PostgreSQL into the cache (a tombstone when it
 * is unknown, revoked, expired or its user inactive). Returns 0 or -1. */
static int load_apikey(api_req_t *r)
{
    static const char *sql =
        "SELECT k.id, k.user_id, u.role, "
        "       coalesce((extract(epoch from k.expires_at) * 1000)::bigint, 0), "
        "       k.revoked_at IS NULL AND u.is_active "
        "       AND (k.expires_at IS NULL OR k.expires_at > now()) "
        "FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1";
    const char *params[] = {r->who.key_sha};
    PGconn *pg = cm_pg_acquire(r->pg, ACQUIRE_MS);
    PGresult *res;
    int rc = -1;

    if (!pg) return -1;
    res = PQexecParams(pg, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        LOG_REQ_ERR(r->request_id, "api key lookup: %s", PQerrorMessage(pg));
    } else if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 4), "t") == 0) {
        api_role_t role = API_ROLE_USER;
        api_role_parse(PQgetvalue(res, 0, 2), &role);
        rc = put_key(r->q, r->who.key_sha, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), role,
                     strtoll(PQgetvalue(res, 0, 3), NULL, 10), 0);
    } else {
        rc = put_key(r->q, r->who.key_sha, NULL, NULL, API_ROLE_USER, 0, 0);
    }
    PQclear(res);
    cm_pg_release(r->pg, pg);
    return rc;
}

/* Records the key's use (the gate asks at most once a minute per key). */
static void touch_apikey(api_req_t *r)
{
    const char *params[] = {r->who.sid};
    PGconn *pg = cm_pg_acquire(r->pg, ACQUIRE_MS);
    if (!pg) return;
    PGresult *res = PQexecParams(
        pg, "UPDATE api_keys SET last_used_at = now() WHERE id = $1", 1, NULL, params, NULL,
        NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        LOG_REQ_WARN(r->request_id, "api key last use: %s", PQerrorMessage(pg));
    PQclear(res);
    cm_pg_release(r->pg, pg);
}

/* ---- the gate -------------------------------------------------------------------- */

static const char *bucket_name(api_bucket_t b)
{
    switch (b) {
    case API_RL_USER: return "user";
    case API_RL_APIKEY: return "apikey";
    case API_RL_AUTH: return "auth";
    case API_RL_IP: return "ip";
    default: return "";
    }
}

static int bucket_limit(api_bucket_t b)
{
    switch (b) {
    case API_RL_USER: return cm_cfg.rl_user;
    case API_RL_APIKEY: return cm_cfg.rl_api_key;
    case API_RL_AUTH: return cm_cfg.rl_auth;
    case API_RL_IP: return cm_cfg.rl_ip;
    default: return 0;
    }
}

static int unauthorized(api_req_t *r, int missing)
{
    if (missing)
        return api_error(r, 401, "UNAUTHORIZED", NULL,
                         "WWW-Authenticate: Bearer realm=\"conveyor\"\r\n",
                         "authentication required: send Authorization: Bearer <token>");
    return api_error(r, 401, "UNAUTHORIZED", NULL,
                     "WWW-Authenticate: Bearer realm=\"conveyor\", error=\"invalid_token\"\r\n",
                     "the bearer token is not valid");
}

static int unavailable(api_req_t *r)
{
    return api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                     "authentication is unavailable; try again shortly");
}

/* Resolves the request's credential: the Authorization header, else ?api_key=, else
 * ?token=. Returns what api_authenticate does. */
static int credential(api_req_t *r)
{
    const char *h = mg_get_header(r->conn, "Authorization");
    const char *qs = r->ri->query_string;
    char tok[1100];

    if (h) return api_authenticate(h, &r->who);
    if (qs) {
        size_t n = strlen(qs);
        if (mg_get_var(qs, n, "api_key", tok, sizeof(tok)) >= 0 ||
            mg_get_var(qs, n, "token", tok, sizeof(tok)) >= 0) {
            int rc = api_authenticate_token(tok, &r->who);
            OPENSSL_cleanse(tok, sizeof(tok));
            return rc == API_AUTH_EMISSING ? API_AUTH_EINVALID : rc;
        }
    }
    memset(&r->who, 0, sizeof(r->who));
    return API_AUTH_EMISSING;
}

/* Writes the rate-limit headers for a bucket of limit requests, count used, ttl ms left. */
static void limit_headers(api_req_t *r, api_bucket_t b, long long limit, long long count,
                          long long ttl_ms)
{
    long long left = limit - count, reset = (ttl_ms + 999) / 1000;
    if (left < 0) left = 0;
    if (reset < 1) reset = 1;
    snprintf(r->limit_headers, sizeof(r->limit_headers),
             "X-RateLimit-Limit: %lld\r\nX-RateLimit-Remaining: %lld\r\n"
             "X-RateLimit-Reset: %lld\r\nRateLimit-Policy: \"%s\";q=%lld;w=%d\r\n"
             "RateLimit: \"%s\";r=%lld;t=%lld\r\n",
             limit, left, (long long)(cm_now_ms() / 1000) + reset, bucket_name(b), limit,
             cm_cfg.rl_window_seconds, bucket_name(b), left, reset);
}

/* The 429 for a bucket of limit requests whose window ends in ttl_ms. */
static int limited(api_req_t *r, int limit, long long ttl_ms)
{
    long long after = (ttl_ms + 999) / 1000;
    char hdr[48];
    if (after < 1) after = 1;
    snprintf(hdr, sizeof(hdr), "Retry-After: %lld\r\n", after);
    return api_error(r, 429, "RATE_LIMITED",
                     json_pack("{s:i,s:i,s:I}", "limit", limit, "windowSeconds",
                               cm_cfg.rl_window_seconds, "retryAfter", (json_int_t)after),
                     hdr, "rate limit exceeded: %d requests per %d s; retry in %lld s", limit,
                     cm_cfg.rl_window_seconds, after);
}

/* Fills the principal from an API key record. */
static void from_key(api_req_t *r, const api_authcache_key_t *k)
{
    snprintf(r->who.sid, sizeof(r->who.sid), "%s", k->id);
    snprintf(r->who.owner, sizeof(r->who.owner), "%s", k->user);
    r->who.role = k->role;
}

/* Answers from what this process knows, when it knows enough: the credential checked
 * recently (nothing revoked since) and the bucket far from its limit. Returns 1 when
 * done (r->who and the headers filled), 0 when Redis must be asked. */
static int check_local(api_req_t *r, api_bucket_t b, int limit, const char *rl_key,
                       int64_t now)
{
    api_authcache_key_t k;
    long long count;
    int64_t reset;

    if (!r->auth) return 0;
    if (r->who.cred == API_CRED_ACCESS) {
        if (!api_authcache_session(r->auth, r->who.sid, now)) return 0;
    } else if (r->who.cred == API_CRED_APIKEY) {
        if (!api_authcache_key(r->auth, r->who.key_sha, now, &k) ||
            (k.exp_ms && k.exp_ms <= now))
            return 0;
    }
    if (limit > 0) {
        if (!api_authcache_count(r->auth, rl_key, limit, now, &count, &reset)) return 0;
        limit_headers(r, b, limit, count, reset - now);
    }
    if (r->who.cred == API_CRED_APIKEY) {
        from_key(r, &k);
        if (api_authcache_key_touch(r->auth, r->who.key_sha, now)) touch_apikey(r);
    }
    return 1;
}

/* Runs the gate script for the caller (or the client IP for an anonymous bucket).
 * Returns 0 or the status of the error sent. */
static int check(api_req_t *r, api_bucket_t b)
{
    char cred_key[160], rl_key[API_AUTHCACHE_KEY_MAX], limit_s[16], window_s[16], now_s[24];
    const char *prefix = q_conn_prefix(r->q), *mode = "n", *id;
    int limit = bucket_limit(b);
    int64_t now = cm_now_ms();

    if (r->who.cred == API_CRED_ACCESS) {
        api_key_revoked(cred_key, sizeof(cred_key), prefix, r->who.sid);
        mode = "s";
        id = r->who.owner;
    } else if (r->who.cred == API_CRED_APIKEY) {
        api_key_apikey(cred_key, sizeof(cred_key), prefix, r->who.key_sha);
        mode = "k";
        id = r->who.key_sha;
    } else {
        id = r->ri->remote_addr;
        snprintf(cred_key, sizeof(cred_key), "%srl:-", prefix);
    }
    snprintf(rl_key, sizeof(rl_key), "%srl:%s:%s", prefix, bucket_name(b), id);
    if (check_local(r, b, limit, rl_key, now)) return 0;
    snprintf(limit_s, sizeof(limit_s), "%d", limit);
    snprintf(window_s, sizeof(window_s), "%lld", (long long)cm_cfg.rl_window_seconds * 1000);
    for (int round = 0; round < 2; round++) {
        char n_s[24];
        const char *args[] = {cred_key, rl_key, mode, limit_s, window_s, now_s, n_s};
        uint64_t ticket = r->auth ? api_authcache_ticket(r->auth) : 0;
        api_authcache_key_t k = {0};
        /* requests let through locally that the flusher has not sent yet ride along */
        long long extra = limit > 0 && r->auth ? api_authcache_take_one(r->auth, rl_key) : 0;
        now = cm_now_ms();
        snprintf(now_s, sizeof(now_s), "%lld", (long long)now);
        snprintf(n_s, sizeof(n_s), "%lld", extra + 1);
        redisReply *x = eval(r->q, S_GATE, 2, 7, args);
        int counted = x && x->type == REDIS_REPLY_ARRAY && x->elements >= 3 &&
                      x->element[0]->integer >= 0;
        if (extra) /* refused or failed: they go back to pending */
            api_authcache_flushed(r->auth, rl_key, extra, counted,
                                  counted ? x->element[1]->integer : 0,
                                  counted ? x->element[2]->integer : 0, now);
        if (!x || x->type != REDIS_REPLY_ARRAY || x->elements < 3) {
            freeReplyObject(x);
            return unavailable(r);
        }
        long long state = x->element[0]->integer, count = x->element[1]->integer,
                  ttl = x->element[2]->integer;
        if (state == -2 && round == 0) { /* a key not cached yet */
            freeReplyObject(x);
            if (load_apikey(r) != 0) return unavailable(r);
            continue;
        }
        if (state < 0) {
            freeReplyObject(x);
            return unauthorized(r, 0);
        }
        if (r->who.cred == API_CRED_APIKEY) {
            if (x->elements < 8 || x->element[3]->type != REDIS_REPLY_STRING ||
                x->element[4]->type != REDIS_REPLY_STRING ||
                x->element[5]->type != REDIS_REPLY_STRING ||
                x->element[7]->type != REDIS_REPLY_STRING ||
                strlen(x->element[4]->str) >= sizeof(k.user) ||
                strlen(x->element[3]->str) >= sizeof(k.id) ||
                !api_role_parse(x->element[5]->str, &k.role)) {
                freeReplyObject(x);
                return unavailable(r);
            }
            snprintf(k.id, sizeof(k.id), "%s", x->element[3]->str);
            snprintf(k.user, sizeof(k.user), "%s", x->element[4]->str);
            k.exp_ms = strtoll(x->element[7]->str, NULL, 10);
            from_key(r, &k);
            if (x->element[6]->integer == 1) {
                k.touched_ms = now;
                touch_apikey(r);
            }
            if (r->auth) api_authcache_key_put(r->auth, r->who.key_sha, &k, ticket, now);
        } else if (r->who.cred == API_CRED_ACCESS && r->auth) {
            api_authcache_session_put(r->auth, r->who.sid, ticket, now);
        }
        freeReplyObject(x);
        if (limit > 0) {
            if (r->auth) api_authcache_count_sync(r->auth, rl_key, count, ttl, now);
            limit_headers(r, b, limit, count, ttl);
            if (state == 0) return limited(r, limit, ttl);
        }
        return 0;
    }
    return unavailable(r);
}

/* check() of bucket b for the client address, as for a caller without a credential
 * (r->who is kept). Returns 0 or the status of the error sent. */
static int check_address(api_req_t *r, api_bucket_t b)
{
    api_principal_t who = r->who;
    int rc;

    memset(&r->who, 0, sizeof(r->who));
    rc = check(r, b);
    r->who = who;
    return rc;
}

/* ---- the flusher ----------------------------------------------------------------- */

#define FLUSH_EVERY_MS 5
#define FLUSH_MAX 256

static struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int running, stop;
    api_authcache_t *auth;
} flusher = {.lock = PTHREAD_MUTEX_INITIALIZER}; /* cond: initialized by the start */

/* Adds every bucket's locally counted requests to Redis. */
static void flush_once(q_conn_t *q, api_authcache_t *auth)
{
    static char keys[FLUSH_MAX][API_AUTHCACHE_KEY_MAX];
    long long n[FLUSH_MAX];
    int64_t now = cm_now_ms();
    int got = api_authcache_take(auth, keys, n, FLUSH_MAX, now);
    char window_s[16], now_s[24], n_s[24];

    snprintf(window_s, sizeof(window_s), "%lld", (long long)cm_cfg.rl_window_seconds * 1000);
    snprintf(now_s, sizeof(now_s), "%lld", (long long)now);
    for (int i = 0; i < got; i++) {
        snprintf(n_s, sizeof(n_s), "%lld", n[i]);
        const char *args[] = {keys[i], keys[i], "n", "1", window_s, now_s, n_s};
        redisReply *x = eval(q, S_GATE, 2, 7, args);
        int ok = x && x->type == REDIS_REPLY_ARRAY && x->elements >= 3;
        api_authcache_flushed(auth, keys[i], n[i], ok, ok ? x->element[1]->integer : 0,
                              ok ? x->element[2]->integer : 0, cm_now_ms());
        freeReplyObject(x);
    }
}

static void *on_flusher(void *arg)
{
    (void)arg;
    q_conn_t *q = q_conn_new(cm_cfg.redis_host, cm_cfg.redis_port, cm_cfg.redis_prefix,
                             cm_cfg.redis_timeout_ms);
    int stop = 0;
    while (!stop) {
        struct timespec ts;
        pthread_mutex_lock(&flusher.lock);
        cm_deadline_ms(&ts, FLUSH_EVERY_MS);
        if (!flusher.stop) pthread_cond_timedwait(&flusher.cond, &flusher.lock, &ts);
        stop = flusher.stop;
        pthread_mutex_unlock(&flusher.lock);
        if (q) flush_once(q, flusher.auth); /* the last round flushes what is left */
    }
    q_conn_free(q);
    return NULL;
}

int api_gate_flusher_start(api_authcache_t *auth)
{
    flusher.auth = auth;
    flusher.stop = 0;
    if (cm_cond_init_monotonic(&flusher.cond) != 0) return -1;
    if (pthread_create(&flusher.thread, NULL, on_flusher, NULL) != 0) {
        pthread_cond_destroy(&flusher.cond);
        return -1;
    }
    flusher.running = 1;
    return 0;
}

void api_gate_flusher_stop(void)
{
    if (!flusher.running) return;
    pthread_mutex_lock(&flusher.lock);
    flusher.stop = 1;
    pthread_cond_signal(&flusher.cond);
    pthread_mutex_unlock(&flusher.lock);
    pthread_join(flusher.thread, NULL);
    pthread_cond_destroy(&flusher.cond);
    flusher.running = 0;
}

int api_gate(api_req_t *r, int auth, api_bucket_t bucket)
{
    int rc;

    if (auth == API_AUTH_NONE) {
        memset(&r->who, 0, sizeof(r->who));
        return bucket != API_RL_NONE && bucket_limit(bucket) > 0 ? check(r, bucket) : 0;
    }
    rc = credential(r);
    if (rc == API_AUTH_EMISSING && auth == API_AUTH_OPTIONAL)
        return bucket != API_RL_NONE && bucket_limit(bucket) > 0 ? check(r, bucket) : 0;
    if (rc != 0) return unauthorized(r, rc == API_AUTH_EMISSING);
    if (r->who.cred != API_CRED_OPERATOR) {
        api_bucket_t b = r->who.cred == API_CRED_APIKEY ? API_RL_APIKEY : API_RL_USER;
        /* the script runs even with no limit: it checks revocation */
        if ((rc = check(r, b)) != 0) return rc;
        /* a sign-up (POST /v1/users) with a user's credential counts as one without: per
         * client address, or every API key a user makes would bring its own allowance */
        if (bucket == API_RL_AUTH && r->who.role != API_ROLE_ADMIN && bucket_limit(bucket) > 0 &&
            (rc = check_address(r, bucket)) != 0)
            return rc;
    }
    if (auth == API_AUTH_ADMIN && r->who.role != API_ROLE_ADMIN)
        return api_error(r, 403, "FORBIDDEN", NULL, NULL, "this endpoint needs the admin role");
    return 0;
}
