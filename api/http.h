/* api/http.h — one HTTP request: its context, JSON replies, the error envelope, the
 * request body and query string, and the small parsers the handlers share.
 *
 * Every reply is JSON with Content-Length and X-Request-Id, written with one mg_write.
 * Errors are {"error":{"code","message","details","requestId"}}. Handlers return the
 * status they sent (what api_reply and api_error return). */
#ifndef API_HTTP_H
#define API_HTTP_H

#include <civetweb.h>
#include <jansson.h>
#include <stdint.h>

#include "api/auth.h"
#include "api/conn.h"
#include "api/authcache.h"
#include "api/cache.h"
#include "api/wait.h"
#include "common/pg.h"
#include "queue/queue.h"

#define API_REQ_ID_MAX 128   /* longest X-Request-Id taken from a client */
#define API_PARAM_MAX 64     /* longest {id} path segment kept */
#define API_QUERY_MAX 8      /* query parameters per request */
#define API_QUERY_BUF 1024   /* their decoded values, together */
#define API_LIMIT_HEADERS 320 /* the rate-limit header lines */

/* A request in flight; lives on the stack of the civetweb thread serving it. Every
 * pointer is borrowed. */
typedef struct api_req {
    struct mg_connection *conn;
    const struct mg_request_info *ri;
    char request_id[API_REQ_ID_MAX + 1];
    char param[API_PARAM_MAX];  /* the {id} path segment ("" if too long or none) */
    api_principal_t who;        /* the caller (routes that need auth) */
    q_conn_t *q;                /* this thread's Redis connection */
    q_batcher_t *enq;           /* the process's enqueue batcher (q_enqueue through it) */
    api_conn_t *slot;           /* this thread's connection slot (NULL: replies not deferred) */
    cm_pg_pool_t *pg;           /* the process's PostgreSQL pool */
    api_waits_t *waits;         /* the process's long-poll registry */
    api_cache_t *cache;         /* the process's job answer cache (NULL: none) */
    api_authcache_t *auth;      /* the process's credential/counter cache (NULL: none) */
    char limit_headers[API_LIMIT_HEADERS]; /* rate-limit header lines of every reply */
    int status;                 /* status sent; 0 until a reply is written */
    int close;                  /* ask the client to close the connection after it */
    int nq;                     /* query parameters kept by api_query_check */
    const char *qname[API_QUERY_MAX], *qval[API_QUERY_MAX];
    char qbuf[API_QUERY_BUF];
} api_req_t;

/* ---- replies -------------------------------------------------------------------- */

/* Sends status with body (takes it; NULL sends {}; left out for HEAD) and extra header
 * lines (each ending in "\r\n"; NULL for none). Returns status. */
int api_reply(api_req_t *r, int status, json_t *body, const char *headers);

/* Sends status with body already rendered by api_render (len bytes, borrowed) and
 * extra header lines, as api_reply would. Returns status. */
int api_reply_text(api_req_t *r, int status, const char *body, size_t len,
                   const char *headers);

/* Renders body (borrowed) as the bytes api_reply sends into buf (size cap). Returns
 * the length (more than cap: it did not fit, buf holds a prefix), 0 on error. */
size_t api_render(const json_t *body, char *buf, size_t cap);
#define API_RENDER_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(12)) /* api_render's */

/* Sends the error envelope: code ("NOT_FOUND"...), details (takes; NULL: null), extra
 * header lines (NULL for none) and a printf-style message. Returns status. */
int api_error(api_req_t *r, int status, const char *code, json_t *details,
              const char *headers, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* 422 VALIDATION_ERROR with details {"field": field}. Returns 422. */
int api_field_error(api_req_t *r, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The error for a failed queue call: 503 SERVICE_UNAVAILABLE for Q_EREDIS, else 500.
 * Returns the status. */
int api_queue_error(api_req_t *r, int qerr);

/* ---- deferred replies (api/conn.h) ---------------------------------------------- */

/* What a reply written by another thread needs of its request, copied. */
typedef struct api_later {
    api_conn_t *conn;
    char request_id[API_REQ_ID_MAX + 1];
    char limit_headers[API_LIMIT_HEADERS];
    const char *connection; /* the Connection header lines */
} api_later_t;

/* Defers r's reply to l: 0, and r counts as answered with status (what the request log
 * says); the connection waits for api_later_text or api_later_queue_error, which must
 * follow. -1: not possible here (no slot, HEAD, the connection closes after it, TLS...):
 * reply as usual. */
int api_later_begin(api_req_t *r, api_later_t *l, int status);

/* Writes status with body (rendered by api_render, len bytes, borrowed) and extra
 * header lines, as api_reply_text would, from any thread; ends the deferral. */
void api_later_text(api_later_t *l, int status, const char *body, size_t len,
                    const char *headers);

/* Writes the error of a failed queue call, as api_queue_error would; ends the deferral. */
void api_later_queue_error(api_later_t *l, int qerr);

/* ---- request -------------------------------------------------------------------- */

/* Reads and parses the JSON body (at most cm_cfg.max_body_bytes). Returns 0 with *out
 * (a new reference to an object; NULL when the body is empty and not required), or -1
 * after sending 413, 415, 400 (empty when required, malformed) or 422 (not an object). */
int api_read_json(api_req_t *r, int required, json_t **out);

/* Checks the query string: each parameter must be one of names (NULL-terminated; NULL
 * allows none), given once, with a decoded value shorter than API_QUERY_BUF. Keeps the
 * values in r. Returns 0, or -1 after sending 422 naming the parameter. */
int api_query_check(api_req_t *r, const char *const *names);

/* The decoded value of query parameter name (checked by api_query_check), or NULL.
 * Borrowed from r. */
const char *api_query(const api_req_t *r, const char *name);

/* Reads integer query parameter name into *out (def when absent). Returns 0, or -1
 * after sending 422 if it is not an integer in [min, max]. */
int api_query_int(api_req_t *r, const char *name, long long min, long long max,
                  long long def, long long *out);

/* ---- parsers (pure) ------------------------------------------------------------- */

/* Characters (code points) of UTF-8 text s; jansson strings are valid UTF-8. */
size_t api_utf8_chars(const char *s);

/* The first key of object obj not named in allowed (NULL-terminated), or NULL. Borrowed. */
const char *api_json_unknown_key(const json_t *obj, const char *const *allowed);

/* 1 if s is a client request id: 1-128 of [A-Za-z0-9._-]. */
int api_request_id_valid(const char *s);

/* Writes the request id into out: client's if valid, else "req_" + 20 random base62. */
void api_request_id(const char *client, char out[API_REQ_ID_MAX + 1]);

/* Parses a decimal integer (optional '-', digits only) within [min, max]. Returns 0 or
 * -1. */
int api_parse_int(const char *s, long long min, long long max, long long *out);

/* Parses an RFC 3339 date-time ("2025-01-02T03:04:05.678Z", offsets "+01:00", 't'/'z'
 * accepted; fractions beyond milliseconds truncated) into ms since the epoch. Returns 0
 * or -1. */
int api_parse_rfc3339(const char *s, int64_t *ms);

#endif
