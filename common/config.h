/* common/config.h — every setting, from CONVEYOR_* environment variables.
 *
 * One table in config.c lists each entry (name, type, default, description); the README's
 * configuration table is printed from it by `conveyor config`. */
#ifndef CM_CONFIG_H
#define CM_CONFIG_H

#include <stdio.h>

/* The longest CONVEYOR_REDIS_PREFIX: with the longest queue name, every key fits the
 * buffers of queue/ and workers/. */
#define CM_REDIS_PREFIX_MAX 32

typedef struct cm_config {
    /* connections */
    char redis_host[256];
    int redis_port;
    char redis_user[128];      /* from the URL's user info ("" : none; a secret's name) */
    char redis_password[256];  /* from the URL ("" : no AUTH); never logged */
    char *redis_url;       /* CONVEYOR_REDIS_URL, redis://[[user:]password@]host:port */
    char *redis_prefix;    /* key prefix, "cv" */
    char *database_url;    /* libpq conninfo */
    char *pg_schema;       /* schema for all tables ("public") */
    int pg_pool_size;
    int redis_timeout_ms;  /* connect and command timeout */
    int pg_statement_timeout_ms;
    /* api */
    char *listen;          /* "127.0.0.1:8080" */
    int api_threads;
    char *operator_token;  /* secret; never logged */
    int max_body_bytes;
    int max_waiters;       /* long-polls/sync calls waiting at once per api process */
    int max_wait_seconds;  /* cap of ?wait=N */
    /* accounts */
    char *jwt_secret;      /* HS256 key; secret, never logged */
    int access_ttl_seconds;
    int refresh_ttl_seconds;
    int password_min_length;
    int argon2_memory_kib;
    int argon2_iterations;
    /* rate limits: requests per window; 0 turns one off */
    int rl_window_seconds;
    int rl_user;
    int rl_api_key;
    int rl_auth;
    int rl_ip;
    /* worker */
    int concurrency;       /* jobs in flight per worker process */
    char *queues;          /* "critical:3,default:1" (name:weight) */
    int lease_ms;          /* lease of a fetched job; renewed every lease/3 */
    int job_timeout_ms;    /* default maximum run time of one attempt */
    int shutdown_timeout_ms;
    int max_attempts;      /* default attempts for a job */
    double backoff_scale;  /* multiplies every retry delay (tests use small values) */
    /* scheduler */
    int scheduler_interval_ms;
    int leader_ttl_ms;
    int archive_batch;
    int retention_seconds;      /* succeeded/canceled jobs stay in Redis this long */
    int dead_retention_seconds; /* failed/dead jobs stay in Redis this long */
    int idempotency_ttl_seconds;
    /* logs */
    char *log_level;
} cm_config_t;

/* The process-wide configuration; valid after cm_config_load(). */
extern cm_config_t cm_cfg;

/* Reads every CONVEYOR_* variable into cm_cfg. Returns 0, or -1 after writing to err
 * (size errlen) which variable is invalid. */
int cm_config_load(char *err, size_t errlen);

/* Frees the strings of cm_cfg. */
void cm_config_free(void);

/* Writes the configuration table as Markdown (name, default, description). */
void cm_config_print_table(FILE *out);

#endif
