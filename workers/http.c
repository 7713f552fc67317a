/* workers/http.c — libcurl's multi interface driven by a libuv loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one uv_poll_t each)
 * and when to wake it up (CURLMOPT_TIMERFUNCTION: one uv_timer_t); both call
 * curl_multi_socket_action, after which finished transfers are read off the multi handle
 * and called back. Connections live in the multi handle's cache, so one request's
 * keep-alive connection serves the next.
 *
 * Re-entrancy: user callbacks run only from complete(), never inside a curl callback and
 * never inside wk_http_start, so they may call every function here. h->depth counts our
 * frames on the stack that still use h->multi after a user callback returns; a
 * wk_http_free called under them cancels the calls and closes the uv handles at once, but
 * leaves curl_multi_cleanup to the outermost frame (leave()). */
#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "workers/http.h"

#define RETRY_AFTER_MAX_S 1000000000LL /* keeps seconds * 1000 far from overflow */

/* A socket curl asked us to watch. Freed in its close callback only: curl may open a new
 * socket with the same number (and we a new poll for it) before the loop gets there. */
struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    wk_http_t *h;
    struct sock *prev, *next; /* h->socks while watched */
};

struct wk_http_call {
    wk_http_t *h;
    CURL *easy;
    struct curl_slist *headers;
    wk_http_cb cb;
    void *arg;
    char *buf; /* the body so far, NUL-terminated; grows up to max + 1 */
    size_t len, cap, max;
    long long retry_after_ms;
    uint64_t start_ns;
    int toobig, nomem, done;
    char errbuf[CURL_ERROR_SIZE];
    wk_http_call_t *prev, *next; /* h->calls */
};

struct wk_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    wk_http_call_t *calls; /* in flight */
    struct sock *socks;    /* watched */
    int in_flight;
    int depth;   /* our frames on the stack that use multi after a user callback */
    int freeing; /* wk_http_free was called: no new calls; tear down at depth 0 */
    int destroyed;    /* the multi handle is gone */
    int timer_closed; /* and the timer's close callback ran */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe and must precede every handle: once per process,
 * whichever thread gets here first. Never undone: handles may live until exit. */
static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

const char *wk_http_strerror(int err)
{
    switch (err) {
    case WK_HTTP_OK: return "ok";
    case WK_HTTP_ECONNECT: return "connect";
    case WK_HTTP_ETIMEOUT: return "timeout";
    case WK_HTTP_EIO: return "io";
    case WK_HTTP_ETOOBIG: return "too big";
    case WK_HTTP_ECANCELED: return "canceled";
    case WK_HTTP_ENOMEM: return "out of memory";
    default: return "unknown";
    }
}

/* ---- tear-down ------------------------------------------------------------------ */

static void on_sock_closed(uv_handle_t *handle) { free(handle->data); }

/* Stops watching s and hands it to the loop to free. */
static void sock_close(struct sock *s)
{
    wk_http_t *h = s->h;
    if (s->prev)
        s->prev->next = s->next;
    else
        h->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* h lives until both its timer's close callback ran and the multi handle is gone. */
static void on_timer_closed(uv_handle_t *handle)
{
    wk_http_t *h = handle->data;
    h->timer_closed = 1;
    if (h->destroyed) free(h);
}

/* Closes our uv handles at once, so that a uv_walk closing whatever is left open (the
 * worker's shutdown does that right after wk_http_free) finds them closing already. curl
 * forgets each sock first: it must not hand them back to on_curl_socket. */
static void close_handles(wk_http_t *h)
{
    while (h->socks) {
        curl_multi_assign(h->multi, h->socks->fd, NULL);
        sock_close(h->socks);
    }
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

/* Drops the multi handle and its cached connections, once nothing of ours on the stack
 * uses it any more. Every call has been called back already. */
static void destroy(wk_http_t *h)
{
    curl_multi_cleanup(h->multi);
    h->multi = NULL;
    h->destroyed = 1;
    if (h->timer_closed) free(h);
}

/* Leaves a frame entered with h->depth++; the outermost one after a wk_http_free does
 * the tearing down the free could not do under it. */
static void leave(wk_http_t *h)
{
    if (--h->depth == 0 && h->freeing && !h->destroyed) destroy(h);
}

/* ---- completion ----------------------------------------------------------------- */

/* Detaches c from curl and from h, calls it back once with resp and frees it. */
static void complete(wk_http_call_t *c, wk_http_resp_t *resp)
{
    wk_http_t *h = c->h;

    c->done = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    h->in_flight--;
    /* Before the callback: a finished transfer's connection goes back to the cache, so a
     * request the callback starts can reuse it; a cancelled one's message is dropped. */
    curl_multi_remove_handle(h->multi, c->easy);
    curl_easy_cleanup(c->easy);
    c->easy = NULL;
    curl_slist_free_all(c->headers);
    c->headers = NULL;
    resp->total_ms = (double)(uv_hrtime() - c->start_ns) / 1e6;

    h->depth++;
    c->cb(c->arg, resp);
    free(c->buf);
    free(c);
    leave(h);
}

static int map_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return WK_HTTP_ECONNECT;
    case CURLE_OPERATION_TIMEDOUT: return WK_HTTP_ETIMEOUT;
    case CURLE_OUT_OF_MEMORY: return WK_HTTP_ENOMEM;
    case CURLE_FILESIZE_EXCEEDED: return WK_HTTP_ETOOBIG; /* Content-Length over the cap */
    default: return WK_HTTP_EIO;
    }
}

/* Calls back the transfer curl finished with rc. */
static void finish(wk_http_call_t *c, CURLcode rc)
{
    wk_http_resp_t resp = {.body = "", .retry_after_ms = -1};

    if (rc == CURLE_OK) {
        resp.err = WK_HTTP_OK;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &resp.status);
        if (c->buf) {
            resp.body = c->buf;
            resp.body_len = c->len;
        }
        resp.retry_after_ms = c->retry_after_ms;
    } else if (c->toobig || rc == CURLE_FILESIZE_EXCEEDED) {
        /* Our own words: curl would only say "failure writing output". */
        resp.err = WK_HTTP_ETOOBIG;
        snprintf(c->errbuf, sizeof(c->errbuf), "response larger than %zu bytes", c->max);
        resp.error = c->errbuf;
    } else if (c->nomem) {
        resp.err = WK_HTTP_ENOMEM;
        resp.error = "out of memory for the response";
    } else {
        resp.err = map_error(rc);
        resp.error = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
    }
    complete(c, &resp);
}

/* Calls back every transfer curl has finished. Stops once wk_http_free was called: it
 * called back the rest. */
static void check_done(wk_http_t *h)
{
    CURLMsg *msg;
    int left;

    while (!h->freeing && (msg = curl_multi_info_read(h->multi, &left))) {
        char *priv = NULL;
        CURLcode rc;
        if (msg->msg != CURLMSG_DONE) continue;
        rc = msg->data.result; /* msg dies with the handle's removal */
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        finish((wk_http_call_t *)(void *)priv, rc);
    }
}

/* ---- driving curl from the loop ------------------------------------------------- */

static void drive(wk_http_t *h, curl_socket_t fd, int flags)
{
    int running;
    h->depth++;
    curl_multi_socket_action(h->multi, fd, flags, &running);
    check_done(h);
    leave(h);
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    struct sock *s = poll->data;
    int flags = 0;

    if (status < 0) {
        flags = CURL_CSELECT_ERR; /* curl finds out what went wrong on its own */
    } else {
        if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    }
    drive(s->h, s->fd, flags); /* may close s: nothing of it is used after */
}

static void on_timer(uv_timer_t *timer) { drive(timer->data, CURL_SOCKET_TIMEOUT, 0); }

/* CURLMOPT_TIMERFUNCTION: curl wants socket_action(TIMEOUT) in ms (-1: never). It must
 * not be called from here, hence the timer even for 0. */
static int on_curl_timer(CURLM *multi, long ms, void *userp)
{
    wk_http_t *h = userp;
    (void)multi;
    if (h->freeing) return 0; /* the timer is closing or about to: nothing is left to time */
    if (ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timer, (uint64_t)ms, 0);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what (IN, OUT, INOUT) or stop (REMOVE). A -1
 * makes curl fail the transfers on that socket rather than wait forever. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    wk_http_t *h = userp;
    struct sock *s = socketp;
    int events = 0, rc;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(h->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (h->freeing) return -1; /* no transfer is left that could want a socket */
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) {
            LOG_WARN("http: out of memory watching a socket");
            return -1;
        }
        rc = uv_poll_init_socket(h->loop, &s->poll, fd);
        if (rc != 0) {
            LOG_WARN("http: cannot watch socket %d: %s", (int)fd, uv_strerror(rc));
            free(s); /* a failed init leaves nothing registered with the loop */
            return -1;
        }
        s->fd = fd;
        s->h = h;
        s->poll.data = s;
        s->next = h->socks;
        if (h->socks) h->socks->prev = s;
        h->socks = s;
        curl_multi_assign(h->multi, fd, s);
    }
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    rc = uv_poll_start(&s->poll, events, on_poll);
    if (rc != 0) {
        LOG_WARN("http: cannot poll socket %d: %s", (int)fd, uv_strerror(rc));
        return -1;
    }
    return 0;
}

/* ---- one request ---------------------------------------------------------------- */

/* CURLOPT_WRITEFUNCTION: appends to the body; a short count aborts the transfer. */
static size_t on_body(char *data, size_t size, size_t n, void *userp)
{
    wk_http_call_t *c = userp;
    size_t len = size * n; /* size is always 1 */

    if (len > c->max - c->len) {
        c->toobig = 1;
        return 0;
    }
    if (c->len + len + 1 > c->cap) {
        size_t need = c->len + len + 1, cap = c->cap ? c->cap : 4096;
        char *b;
        while (cap < need) cap *= 2;
        if (cap > c->max + 1) cap = c->max + 1;
        b = realloc(c->buf, cap);
        if (!b) {
            c->nomem = 1;
            return 0;
        }
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data, len);
    c->len += len;
    c->buf[c->len] = '\0';
    return len;
}

/* Reads a Retry-After value: delta-seconds, or an HTTP-date turned into ms from now
 * (0 when past). Leaves c->retry_after_ms alone when it is neither. */
static void parse_retry_after(wk_http_call_t *c, const char *v, size_t n)
{
    char s[128];
    size_t i;

    while (n && (*v == ' ' || *v == '\t')) v++, n--;
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof(s)) return;
    memcpy(s, v, n);
    s[n] = '\0';
    for (i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) {}
    if (i == n) {
        long long sec = 0;
        for (i = 0; i < n && sec < RETRY_AFTER_MAX_S; i++) sec = sec * 10 + (s[i] - '0');
        if (sec > RETRY_AFTER_MAX_S) sec = RETRY_AFTER_MAX_S;
        c->retry_after_ms = sec * 1000;
    } else {
        time_t t = curl_getdate(s, NULL);
        long long ms;
        if (t == (time_t)-1) return;
        ms = (long long)t * 1000 - (long long)cm_now_ms();
        c->retry_after_ms = ms > 0 ? ms : 0;
    }
}

/* CURLOPT_HEADERFUNCTION: one header line at a time, status lines included. */
static size_t on_header(char *data, size_t size, size_t n, void *userp)
{
    wk_http_call_t *c = userp;
    size_t len = size * n;
    static const char name[] = "retry-after:";

    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
        c->retry_after_ms = -1; /* a new response (after a 1xx): forget the last one's */
    else if (len >= sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0)
        parse_retry_after(c, data + sizeof(name) - 1, len - (sizeof(name) - 1));
    return len;
}

wk_http_call_t *wk_http_start(wk_http_t *h, const wk_http_req_t *req, wk_http_cb cb, void *arg)
{
    static const char empty[] = "";
    const char *method;
    wk_http_call_t *c;
    CURLcode rc = CURLE_OK;
    int has_expect = 0;

    if (!h || h->freeing || !req || !req->url || !cb) return NULL;
    c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->h = h;
    c->cb = cb;
    c->arg = arg;
    c->retry_after_ms = -1;
    c->max = req->max_response ? req->max_response : WK_HTTP_RESPONSE_MAX;
    if (c->max > SIZE_MAX / 2) c->max = SIZE_MAX / 2; /* so max + 1 and doubling fit */
    c->easy = curl_easy_init();
    if (!c->easy) goto fail;

    for (const char *const *hd = req->headers; hd && *hd; hd++) {
        struct curl_slist *l = curl_slist_append(c->headers, *hd);
        if (!l) goto fail;
        c->headers = l;
        if (strncasecmp(*hd, "expect:", 7) == 0) has_expect = 1;
    }
    if (!has_expect) {
        /* curl would send "Expect: 100-continue" with large bodies and wait up to a
         * second for a provider that never answers it. */
        struct curl_slist *l = curl_slist_append(c->headers, "Expect:");
        if (!l) goto fail;
        c->headers = l;
    }

#define SETOPT(opt, val)                                                                \
    do {                                                                                \
        if (rc == CURLE_OK) rc = curl_easy_setopt(c->easy, opt, val);                   \
    } while (0)
    SETOPT(CURLOPT_URL, req->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https"); /* no file:// or the like from a URL */
    SETOPT(CURLOPT_NOSIGNAL, 1L);                /* no SIGALRM: we share the process */
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS,
           req->connect_timeout_ms > 0 ? req->connect_timeout_ms : WK_HTTP_CONNECT_TIMEOUT_MS);
    SETOPT(CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : WK_HTTP_TIMEOUT_MS);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L); /* idle pooled connections notice a dead peer */
    SETOPT(CURLOPT_HTTPHEADER, c->headers);
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max); /* refuses a Content-Length */
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, c);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, c);
    SETOPT(CURLOPT_ERRORBUFFER, c->errbuf);
    SETOPT(CURLOPT_PRIVATE, (void *)c);

    method = req->method ? req->method : "GET";
    if (strcmp(method, "GET") == 0 && !req->body) {
        SETOPT(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        SETOPT(CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(method, "POST") != 0) SETOPT(CURLOPT_CUSTOMREQUEST, method);
        if (req->body || strcmp(method, "POST") == 0) {
            /* Borrowed, not copied: the caller keeps it until the callback. */
            SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
            SETOPT(CURLOPT_POSTFIELDS, req->body ? req->body : empty);
        }
    }
#undef SETOPT
    if (rc != CURLE_OK) goto fail;

    /* Only queues the transfer and sets curl's timer: no callback can run from here. */
    if (curl_multi_add_handle(h->multi, c->easy) != CURLM_OK) goto fail;
    c->start_ns = uv_hrtime();
    c->next = h->calls;
    if (h->calls) h->calls->prev = c;
    h->calls = c;
    h->in_flight++;
    return c;

fail:
    curl_slist_free_all(c->headers);
    curl_easy_cleanup(c->easy);
    free(c);
    return NULL;
}

void wk_http_cancel(wk_http_call_t *c)
{
    wk_http_resp_t resp = {.err = WK_HTTP_ECANCELED,
                           .body = "",
                           .retry_after_ms = -1,
                           .error = "canceled"};
    if (!c || c->done) return;
    complete(c, &resp);
}

int wk_http_in_flight(const wk_http_t *h) { return h ? h->in_flight : 0; }

/* ---- the client ----------------------------------------------------------------- */

wk_http_t *wk_http_new(uv_loop_t *loop, long max_conns_per_host)
{
    wk_http_t *h;

    if (!loop) return NULL;
    if (pthread_once(&global_once, global_init) != 0 || global_rc != CURLE_OK) {
        LOG_ERR("http: curl_global_init failed");
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->loop = loop;
    h->multi = curl_multi_init();
    if (!h->multi) goto fail_multi;
    if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK ||
        curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                          max_conns_per_host > 0 ? max_conns_per_host : 0L) != CURLM_OK)
        goto fail_setopt;
    if (uv_timer_init(loop, &h->timer) != 0) goto fail_setopt;
    h->timer.data = h;
    return h;

fail_setopt:
    curl_multi_cleanup(h->multi);
fail_multi:
    free(h);
    return NULL;
}

void wk_http_free(wk_http_t *h)
{
    if (!h || h->freeing) return;
    h->freeing = 1;
    h->depth++; /* the cancels below must not tear down under this loop */
    while (h->calls) wk_http_cancel(h->calls);
    close_handles(h);
    leave(h);
}
