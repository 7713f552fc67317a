/* workers/http.h — HTTP requests on a libuv loop through one libcurl multi handle.
 *
 * One wk_http_t per loop carries every request of that loop: hundreds in flight without
 * a thread each, and keep-alive connections reused from one request to the next. Nothing
 * here blocks the loop. Every started call gets its callback exactly once: with the
 * response, an error, or WK_HTTP_ECANCELED. Callbacks never run from inside
 * wk_http_start; they may start, cancel or free freely (wk_http_free included).
 * Everything runs on the loop's thread. */
#ifndef WK_HTTP_H
#define WK_HTTP_H

#include <stddef.h>
#include <uv.h>

typedef struct wk_http wk_http_t;           /* one per loop */
typedef struct wk_http_call wk_http_call_t; /* one request in flight */

/* Timeouts and the response cap a request gets when it leaves them at 0 (or below):
 * every transfer is bounded, whatever the caller forgot. */
#define WK_HTTP_CONNECT_TIMEOUT_MS 10000L
#define WK_HTTP_TIMEOUT_MS 300000L
#define WK_HTTP_RESPONSE_MAX ((size_t)8 << 20)

typedef struct wk_http_req {
    const char *method;         /* "POST", "GET" (NULL: GET); others sent as given */
    const char *url;            /* http:// or https:// only; copied */
    const char *body;           /* borrowed until the callback; NULL: none */
    size_t body_len;
    const char *const *headers; /* "Name: value" lines, NULL-terminated; copied */
    long connect_timeout_ms, timeout_ms; /* <= 0: the defaults above */
    size_t max_response;        /* bytes; larger → error WK_HTTP_ETOOBIG; 0: default */
} wk_http_req_t;

enum {
    WK_HTTP_OK = 0,
    WK_HTTP_ECONNECT = -1,  /* could not resolve or connect */
    WK_HTTP_ETIMEOUT = -2,  /* connect or total timeout */
    WK_HTTP_EIO = -3,       /* anything else curl reports */
    WK_HTTP_ETOOBIG = -4,   /* the body passed max_response */
    WK_HTTP_ECANCELED = -5, /* wk_http_cancel or wk_http_free */
    WK_HTTP_ENOMEM = -6
};

typedef struct wk_http_resp {
    int err;                  /* WK_HTTP_* (OK when an HTTP status arrived, whatever it is) */
    long status;              /* 0 unless err == OK */
    const char *body;         /* NUL-terminated, body_len bytes ("" if none); valid
                               * during the callback */
    size_t body_len;
    long long retry_after_ms; /* from Retry-After (seconds or HTTP-date); -1 when absent */
    double total_ms;          /* from wk_http_start to the callback */
    const char *error;        /* curl's message when err != OK, else NULL */
} wk_http_resp_t;

/* Called once per call; resp and everything it points to are valid during the call
 * only. The call's handle is invalid from the moment its callback starts. */
typedef void (*wk_http_cb)(void *arg, const wk_http_resp_t *resp);

/* A client on loop; max_conns_per_host caps the connections to one host (0: no cap;
 * more calls queue inside curl). Returns NULL when curl or memory fail. Free with
 * wk_http_free before closing the loop. */
wk_http_t *wk_http_new(uv_loop_t *loop, long max_conns_per_host);

/* Cancels everything in flight (callbacks with ECANCELED before it returns), drops the
 * connections and closes the uv handles (released by the loop's next turns, so uv_run
 * can finish). NULL: no-op. Safe inside a callback: the rest is then undone after it. */
void wk_http_free(wk_http_t *h);

/* Starts req (borrowing req->body until the callback, copying the rest). Returns the
 * call, or NULL when nothing was started (out of memory, or h is being freed): cb is
 * then never called. */
wk_http_call_t *wk_http_start(wk_http_t *h, const wk_http_req_t *req, wk_http_cb cb,
                              void *arg);

/* Stops c: its callback runs once with ECANCELED before this returns. c must be a call
 * whose callback has not started yet. */
void wk_http_cancel(wk_http_call_t *c);

/* The calls started and not yet called back. */
int wk_http_in_flight(const wk_http_t *h);

/* A short name for a WK_HTTP_* code ("ok", "connect", "timeout", ...). */
const char *wk_http_strerror(int err);

#endif
