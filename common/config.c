/* common/config.c — the table of settings. */
#define _POSIX_C_SOURCE 200809L
#include "common/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

cm_config_t cm_cfg;

enum cfg_type { T_STR, T_INT, T_DBL };

struct cfg_entry {
    const char *name;
    enum cfg_type type;
    const char *def;
    long min, max; /* for T_INT and T_DBL (max 0: no bound) */
    size_t off;
    const char *doc;
};

#define E(n, t, d, lo, hi, f, doc) {n, t, d, lo, hi, offsetof(cm_config_t, f), doc}

static const struct cfg_entry entries[] = {
    E("CONVEYOR_REDIS_URL", T_STR, "redis://127.0.0.1:6379", 0, 0, redis_url,
      "Redis server (`redis://[[user:]password@]host:port`; a password is sent with AUTH)"),
    E("CONVEYOR_REDIS_PREFIX", T_STR, "cv", 0, 0, redis_prefix,
      "prefix of every Redis key, 1-32 of [A-Za-z0-9_.:-] (several deployments may share one Redis)"),
    E("CONVEYOR_REDIS_TIMEOUT_MS", T_INT, "2000", 50, 600000, redis_timeout_ms,
      "Redis connect and command timeout"),
    E("CONVEYOR_DATABASE_URL", T_STR, "host=127.0.0.1 port=5432 dbname=conveyor user=conveyor", 0,
      0, database_url, "PostgreSQL connection (libpq conninfo or URI)"),
    E("CONVEYOR_PG_SCHEMA", T_STR, "public", 0, 0, pg_schema,
      "PostgreSQL schema holding Conveyor's tables"),
    E("CONVEYOR_PG_POOL_SIZE", T_INT, "4", 1, 256, pg_pool_size,
      "PostgreSQL connections per api process"),
    E("CONVEYOR_PG_STATEMENT_TIMEOUT_MS", T_INT, "5000", 10, 3600000, pg_statement_timeout_ms,
      "`statement_timeout` of every PostgreSQL session"),
    E("CONVEYOR_LISTEN", T_STR, "127.0.0.1:8080", 0, 0, listen, "api listen address"),
    E("CONVEYOR_API_THREADS", T_INT, "32", 2, 1024, api_threads, "api request threads"),
    E("CONVEYOR_OPERATOR_TOKEN", T_STR, "", 0, 0, operator_token,
      "operator credential (admin); `make run` generates one into `var/operator_token`"),
    E("CONVEYOR_MAX_BODY_BYTES", T_INT, "1048576", 1024, 67108864, max_body_bytes,
      "largest request body accepted (larger: 413)"),
    E("CONVEYOR_MAX_WAITERS", T_INT, "64", 0, 100000, max_waiters,
      "requests per api process that may wait on a job at once (`?wait=`); past it they answer at once"),
    E("CONVEYOR_MAX_WAIT_SECONDS", T_INT, "60", 0, 3600, max_wait_seconds,
      "longest `?wait=N` honoured"),
    E("CONVEYOR_JWT_SECRET", T_STR, "", 0, 0, jwt_secret,
      "HS256 key of access tokens, at least 32 bytes; `make run` generates one into `var/jwt_secret`"),
    E("CONVEYOR_ACCESS_TOKEN_TTL_SECONDS", T_INT, "3600", 10, 86400, access_ttl_seconds,
      "lifetime of an access token (JWT `exp`)"),
    E("CONVEYOR_REFRESH_TOKEN_TTL_SECONDS", T_INT, "2592000", 60, 31536000, refresh_ttl_seconds,
      "lifetime of a refresh token (each refresh rotates it)"),
    E("CONVEYOR_PASSWORD_MIN_LENGTH", T_INT, "8", 1, 1024, password_min_length,
      "shortest password accepted (longest: 1024 bytes)"),
    E("CONVEYOR_ARGON2_MEMORY_KIB", T_INT, "19456", 64, 4194304, argon2_memory_kib,
      "argon2id memory cost of new password hashes (KiB)"),
    E("CONVEYOR_ARGON2_ITERATIONS", T_INT, "2", 1, 100, argon2_iterations,
      "argon2id time cost of new password hashes"),
    E("CONVEYOR_RATE_LIMIT_WINDOW_SECONDS", T_INT, "60", 1, 86400, rl_window_seconds,
      "window of every rate limit"),
    E("CONVEYOR_RATE_LIMIT_USER", T_INT, "100", 0, 1000000000, rl_user,
      "requests per window per user signed in with an access token (0: no limit)"),
    E("CONVEYOR_RATE_LIMIT_API_KEY", T_INT, "1000", 0, 1000000000, rl_api_key,
      "requests per window per API key (0: no limit)"),
    E("CONVEYOR_RATE_LIMIT_AUTH", T_INT, "5", 0, 1000000000, rl_auth,
      "register, login and sign-up requests per window per client IP (0: no limit)"),
    E("CONVEYOR_RATE_LIMIT_IP", T_INT, "60", 0, 1000000000, rl_ip,
      "other unauthenticated requests that do work (token refresh) per window per client IP (0: no limit)"),
    E("CONVEYOR_CONCURRENCY", T_INT, "100", 1, 100000, concurrency,
      "jobs in flight per worker process"),
    E("CONVEYOR_QUEUES", T_STR, "default", 0, 0, queues,
      "queues a worker serves, `name[:weight],...` (weighted random order per fetch)"),
    E("CONVEYOR_LEASE_MS", T_INT, "30000", 200, 3600000, lease_ms,
      "lease of a fetched job, renewed every third of it; an expired lease is reclaimed"),
    E("CONVEYOR_JOB_TIMEOUT_MS", T_INT, "300000", 10, 86400000, job_timeout_ms,
      "default maximum run time of one attempt (per job type overridable)"),
    E("CONVEYOR_SHUTDOWN_TIMEOUT_MS", T_INT, "25000", 0, 3600000, shutdown_timeout_ms,
      "on SIGTERM, how long in-flight jobs may finish before they are handed back"),
    E("CONVEYOR_MAX_ATTEMPTS", T_INT, "25", 1, 1000, max_attempts, "default attempts per job"),
    E("CONVEYOR_BACKOFF_SCALE", T_DBL, "1.0", 0, 1000, backoff_scale,
      "multiplies every retry delay (tests use 0.001)"),
    E("CONVEYOR_SCHEDULER_INTERVAL_MS", T_INT, "200", 10, 60000, scheduler_interval_ms,
      "how often the scheduler promotes, reclaims and archives"),
    E("CONVEYOR_LEADER_TTL_MS", T_INT, "5000", 100, 600000, leader_ttl_ms,
      "scheduler leader lock lifetime (renewed while the leader lives)"),
    E("CONVEYOR_ARCHIVE_BATCH", T_INT, "500", 1, 10000, archive_batch,
      "terminal jobs archived to PostgreSQL per batch"),
    E("CONVEYOR_RETENTION_SECONDS", T_INT, "86400", 0, 31536000, retention_seconds,
      "succeeded and canceled jobs stay in Redis this long after archiving"),
    E("CONVEYOR_DEAD_RETENTION_SECONDS", T_INT, "604800", 0, 31536000, dead_retention_seconds,
      "failed and dead jobs stay in Redis this long after archiving"),
    E("CONVEYOR_IDEMPOTENCY_TTL_SECONDS", T_INT, "86400", 1, 31536000, idempotency_ttl_seconds,
      "how long an `Idempotency-Key` is remembered"),
    E("CONVEYOR_LOG_LEVEL", T_STR, "info", 0, 0, log_level, "error, warn, info or debug"),
};

static int parse_redis_url(char *err, size_t errlen)
{
    const char *u = cm_cfg.redis_url, *colon;
    char *end;
    long port = 6379;
    size_t hl;

    if (strncmp(u, "redis://", 8) == 0) u += 8;
    cm_cfg.redis_user[0] = cm_cfg.redis_password[0] = '\0';
    {
        /* [[user:]password@]: as redis-cli -u takes it (no percent-decoding) */
        const char *at = strrchr(u, '@'), *sep;
        if (at) {
            sep = memchr(u, ':', (size_t)(at - u));
            const char *pw = sep ? sep + 1 : u;
            size_t ul = sep ? (size_t)(sep - u) : 0, pl = (size_t)(at - pw);
            if (ul >= sizeof(cm_cfg.redis_user) || pl >= sizeof(cm_cfg.redis_password) || pl == 0) {
                snprintf(err, errlen, "CONVEYOR_REDIS_URL: bad user or password");
                return -1;
            }
            memcpy(cm_cfg.redis_user, u, ul);
            cm_cfg.redis_user[ul] = '\0';
            memcpy(cm_cfg.redis_password, pw, pl);
            cm_cfg.redis_password[pl] = '\0';
            u = at + 1;
        }
    }
    colon = strrchr(u, ':');
    hl = colon ? (size_t)(colon - u) : strlen(u);
    if (colon) {
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        while (*end == '/') end++;
        if (errno || port <= 0 || port > 65535 || (*end && (*end < '0' || *end > '9'))) {
            snprintf(err, errlen, "CONVEYOR_REDIS_URL: bad port");
            return -1;
        }
    }
    if (hl == 0 || hl >= sizeof(cm_cfg.redis_host)) {
        snprintf(err, errlen, "CONVEYOR_REDIS_URL: bad host");
        return -1;
    }
    memcpy(cm_cfg.redis_host, u, hl);
    cm_cfg.redis_host[hl] = '\0';
    cm_cfg.redis_port = (int)port;
    return 0;
}

int cm_config_load(char *err, size_t errlen)
{
    cm_config_free();
    for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
        const struct cfg_entry *e = &entries[i];
        const char *v = getenv(e->name);
        char *field = (char *)&cm_cfg + e->off;
        char *end;

        if (!v || !*v) v = e->def;
        if (e->type == T_STR) {
            char *s = strdup(v);
            if (!s) goto fail_oom;
            memcpy(field, &s, sizeof(s));
        } else if (e->type == T_INT) {
            long n;
            errno = 0;
            n = strtol(v, &end, 10);
            if (errno || *end || n < e->min || (e->max && n > e->max)) {
                snprintf(err, errlen, "%s: expected an integer in [%ld, %ld], got '%s'", e->name,
                         e->min, e->max, v);
                return -1;
            }
            int iv = (int)n;
            memcpy(field, &iv, sizeof(iv));
        } else {
            double d;
            errno = 0;
            d = strtod(v, &end);
            if (errno || *end || d < (double)e->min || (e->max && d > (double)e->max)) {
                snprintf(err, errlen, "%s: expected a number in [%ld, %ld], got '%s'", e->name,
                         e->min, e->max, v);
                return -1;
            }
            memcpy(field, &d, sizeof(d));
        }
    }
    for (const char *c = cm_cfg.pg_schema; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || *c == '_' || (c > cm_cfg.pg_schema && *c >= '0' && *c <= '9'))) {
            snprintf(err, errlen, "CONVEYOR_PG_SCHEMA: expected a lowercase identifier");
            return -1;
        }
    }
    {
        /* every key buffer has room for the longest prefix and queue name */
        size_t n = strspn(cm_cfg.redis_prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                               "0123456789_.:-");
        if (n == 0 || n > CM_REDIS_PREFIX_MAX || cm_cfg.redis_prefix[n] != '\0') {
            snprintf(err, errlen, "CONVEYOR_REDIS_PREFIX: expected 1-%d characters of "
                                  "[A-Za-z0-9_.:-]", CM_REDIS_PREFIX_MAX);
            return -1;
        }
    }
    return parse_redis_url(err, errlen);
fail_oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

void cm_config_free(void)
{
    for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
        if (entries[i].type != T_STR) continue;
        char **field = (char **)((char *)&cm_cfg + entries[i].off);
        free(*field);
        *field = NULL;
    }
}

void cm_config_print_table(FILE *out)
{
    fprintf(out, "| variable | default | what it sets |\n| --- | --- | --- |\n");
    for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++)
        fprintf(out, "| `%s` | `%s` | %s |\n", entries[i].name,
                *entries[i].def ? entries[i].def : "(none)", entries[i].doc);
}
