/* tests/unit/workers/test_http.c — libcurl multi on the loop, against an in-process server.
 *
 * Each test gets its own loop with a small HTTP/1.1 server on 127.0.0.1 (port 0) that
 * answers by path:
 *   /ok                 200 "hello"
 *   /echo               200 "<method> <X-Test header> <body>"
 *   /500                500 "boom"
 *   /ra/secs|date|past|junk  429 with Retry-After 2, now + 5 s, a past date, garbage
 *   /big, /bigchunked   200 with 5000 bytes (Content-Length, chunked)
 *   /hang               never answers
 *   /delay/MS[/TAG]     200 "TAG" (or "delayed") after MS
 *   /close              closes the connection without answering
 * Teardown frees the client, stops the server, then requires uv_run to return and
 * uv_loop_close to succeed: every handle the client opened must be closed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "workers/http.h"

/* ---- the server ----------------------------------------------------------------- */

#define CONN_BUF_MAX (1 << 20)

struct srv;

struct conn {
    struct srv *s;
    uv_tcp_t tcp;
    uv_timer_t timer; /* a delayed answer */
    char *buf;
    size_t len, cap;
    int busy;    /* a request is waiting for its (delayed or never) answer */
    int closing;
    int handles; /* open among tcp and timer */
    char tag[64];
    struct conn *prev, *next;
};

struct srv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    struct conn *conns;
    int accepted, open, requests, in_flight, max_in_flight;
};

static void conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles == 0) {
        free(c->buf);
        free(c);
    }
}

static void conn_close(struct conn *c)
{
    struct srv *s = c->s;
    if (c->closing) return;
    c->closing = 1;
    if (c->busy) s->in_flight--;
    c->busy = 0;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->open--;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

/* Writes len bytes of data (copied) on c. */
static void conn_write(struct conn *c, const char *data, size_t len)
{
    uv_write_t *w = malloc(sizeof(*w) + len);
    uv_buf_t b;
    assert_non_null(w);
    memcpy(w + 1, data, len);
    b = uv_buf_init((char *)(w + 1), (unsigned)len);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) free(w);
}

static void answer(struct conn *c, int status, const char *extra, const char *body, size_t n)
{
    char head[512];
    int hl = snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n",
                      status, n, extra ? extra : "");
    char *all = malloc((size_t)hl + n);
    assert_non_null(all);
    memcpy(all, head, (size_t)hl);
    memcpy(all + hl, body, n);
    conn_write(c, all, (size_t)hl + n);
    free(all);
}

static void process(struct conn *c);

static void on_delay(uv_timer_t *t)
{
    struct conn *c = t->data;
    c->busy = 0;
    c->s->in_flight--;
    answer(c, 200, NULL, c->tag, strlen(c->tag));
    process(c); /* requests that queued behind this one */
}

/* The value of header name (with its colon) in the header block hdr, into out. */
static void header_value(const char *hdr, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    const char *p = hdr;
    snprintf(out, n, "-");
    while ((p = strstr(p, "\r\n"))) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl, *e = strstr(v, "\r\n");
            while (*v == ' ') v++;
            snprintf(out, n, "%.*s", (int)(e - v), v);
            return;
        }
    }
}

static void http_date(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* Answers one request; returns -1 when the connection was closed. */
static int route(struct conn *c, const char *method, const char *path, const char *hdr,
                 const char *body, size_t blen)
{
    char big[5000], extra[200], out[512];
    struct srv *s = c->s;

    s->requests++;
    memset(big, 'x', sizeof(big));
    if (strcmp(path, "/ok") == 0) {
        answer(c, 200, NULL, "hello", 5);
    } else if (strcmp(path, "/echo") == 0) {
        char xt[100];
        header_value(hdr, "x-test:", xt, sizeof(xt));
        int n = snprintf(out, sizeof(out), "%s %s %.*s", method, xt, (int)blen, body);
        answer(c, 200, NULL, out, (size_t)n);
    } else if (strcmp(path, "/500") == 0) {
        answer(c, 500, NULL, "boom", 4);
    } else if (strncmp(path, "/ra/", 4) == 0) {
        char date[64];
        if (strcmp(path + 4, "secs") == 0)
            snprintf(extra, sizeof(extra), "Retry-After: 2\r\n");
        else if (strcmp(path + 4, "date") == 0)
            http_date(time(NULL) + 5, date, sizeof(date)),
                snprintf(extra, sizeof(extra), "Retry-After: %s\r\n", date);
        else if (strcmp(path + 4, "past") == 0)
            http_date(time(NULL) - 3600, date, sizeof(date)),
                snprintf(extra, sizeof(extra), "Retry-After: %s\r\n", date);
        else
            snprintf(extra, sizeof(extra), "Retry-After: soon-ish\r\n");
        answer(c, 429, extra, "slow down", 9);
    } else if (strcmp(path, "/big") == 0) {
        answer(c, 200, NULL, big, sizeof(big));
    } else if (strcmp(path, "/bigchunked") == 0) {
        static const char h[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        conn_write(c, h, sizeof(h) - 1);
        for (int i = 0; i < 5; i++) {
            conn_write(c, "3e8\r\n", 5);
            conn_write(c, big, 1000);
            conn_write(c, "\r\n", 2);
        }
        conn_write(c, "0\r\n\r\n", 5);
    } else if (strcmp(path, "/hang") == 0) {
        c->busy = 1;
        s->in_flight++;
    } else if (strncmp(path, "/delay/", 7) == 0) {
        char *end;
        long ms = strtol(path + 7, &end, 10);
        snprintf(c->tag, sizeof(c->tag), "%s", *end == '/' ? end + 1 : "delayed");
        c->busy = 1;
        s->in_flight++;
        uv_timer_start(&c->timer, on_delay, (uint64_t)ms, 0);
    } else if (strcmp(path, "/close") == 0) {
        conn_close(c);
        return -1;
    } else {
        answer(c, 404, NULL, "no", 2);
    }
    if (s->in_flight > s->max_in_flight) s->max_in_flight = s->in_flight;
    return 0;
}

/* Answers the complete requests in c's buffer, one at a time (HTTP/1.1 keep-alive). */
static void process(struct conn *c)
{
    while (!c->busy && !c->closing) {
        char method[16], path[256], *hdr, *end, cl[32];
        size_t hlen, blen, total;

        if (c->len == 0) return;
        c->buf[c->len] = '\0'; /* alloc_cb keeps a byte for this */
        end = strstr(c->buf, "\r\n\r\n");
        if (!end) return;
        hlen = (size_t)(end - c->buf) + 4;
        hdr = c->buf;
        header_value(hdr, "content-length:", cl, sizeof(cl));
        blen = strcmp(cl, "-") == 0 ? 0 : strtoul(cl, NULL, 10);
        total = hlen + blen;
        if (c->len < total) return;
        end[2] = '\0'; /* header_value searches up to here; the body stays intact */
        if (sscanf(hdr, "%15s %255s", method, path) != 2) {
            conn_close(c);
            return;
        }
        if (route(c, method, path, hdr, c->buf + hlen, blen) != 0) return;
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct conn *c = h->data;
    (void)hint;
    if (c->cap - c->len < 16384 + 1) {
        size_t cap = c->cap ? c->cap * 2 : 32768;
        char *nb = realloc(c->buf, cap);
        if (!nb) {
            *b = uv_buf_init(NULL, 0);
            return;
        }
        c->buf = nb;
        c->cap = cap;
    }
    *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len - 1));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = st->data;
    (void)b;
    if (n < 0 || c->len + (size_t)n > CONN_BUF_MAX) {
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    process(c);
}

static void on_accept(uv_stream_t *l, int status)
{
    struct srv *s = l->data;
    struct conn *c;
    if (status != 0) return;
    c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->open++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    s->accepted++;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void srv_start(struct srv *s, uv_loop_t *loop)
{
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof(got);
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    assert_int_equal(uv_tcp_init(loop, &s->listener), 0);
    s->listener.data = s;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 4096, on_accept), 0);
    assert_int_equal(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len), 0);
    s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

static void srv_stop(struct srv *s)
{
    if (!uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, NULL);
    while (s->conns) conn_close(s->conns);
}

/* ---- the client side ------------------------------------------------------------ */

struct fx {
    uv_loop_t loop;
    struct srv srv;
    uv_timer_t guard; /* wakes UV_RUN_ONCE so run_until can check its deadline */
    wk_http_t *http;
};

struct result {
    int calls;
    int err;
    long status;
    char body[8192];
    size_t body_len;
    long long retry_after_ms;
    double total_ms;
    char error[256];
    int reentrant; /* called from inside wk_http_start */
    int order;     /* completion order */
};

static int in_start, completions;

static void on_guard(uv_timer_t *t) { (void)t; }

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    srv_start(&fx->srv, &fx->loop);
    uv_timer_init(&fx->loop, &fx->guard);
    uv_timer_start(&fx->guard, on_guard, 20, 20);
    fx->http = wk_http_new(&fx->loop, 0);
    assert_non_null(fx->http);
    completions = 0;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    wk_http_free(fx->http);
    srv_stop(&fx->srv);
    if (!uv_is_closing((uv_handle_t *)&fx->guard)) uv_close((uv_handle_t *)&fx->guard, NULL);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0); /* nothing of the client left open */
    free(fx);
    return 0;
}

static void on_resp(void *arg, const wk_http_resp_t *resp)
{
    struct result *r = arg;
    r->calls++;
    r->order = ++completions;
    r->err = resp->err;
    r->status = resp->status;
    r->body_len = resp->body_len;
    snprintf(r->body, sizeof(r->body), "%.*s", (int)resp->body_len, resp->body);
    r->retry_after_ms = resp->retry_after_ms;
    r->total_ms = resp->total_ms;
    snprintf(r->error, sizeof(r->error), "%s", resp->error ? resp->error : "");
    if (in_start) r->reentrant = 1;
    assert_true(resp->body[resp->body_len] == '\0');
}

static wk_http_call_t *start_req(struct fx *fx, wk_http_t *h, const char *method,
                                 const char *path, const char *body, long timeout_ms,
                                 size_t max, struct result *r)
{
    char url[512];
    wk_http_req_t req = {.method = method,
                         .url = url,
                         .body = body,
                         .body_len = body ? strlen(body) : 0,
                         .connect_timeout_ms = 2000,
                         .timeout_ms = timeout_ms,
                         .max_response = max};
    wk_http_call_t *c;
    if (strstr(path, "://"))
        snprintf(url, sizeof(url), "%s", path);
    else
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", fx->srv.port, path);
    memset(r, 0, sizeof(*r));
    in_start = 1;
    c = wk_http_start(h, &req, on_resp, r);
    in_start = 0;
    return c;
}

static wk_http_call_t *get(struct fx *fx, const char *path, struct result *r)
{
    return start_req(fx, fx->http, "GET", path, NULL, 5000, 65536, r);
}

/* Runs the loop until *done reaches want or ms pass; returns 0 if it did. */
static int run_until(struct fx *fx, const int *done, int want, uint64_t ms)
{
    uint64_t end;
    uv_update_time(&fx->loop);
    end = uv_now(&fx->loop) + ms;
    while (*done < want) {
        if (uv_now(&fx->loop) >= end) return -1;
        uv_run(&fx->loop, UV_RUN_ONCE);
    }
    return 0;
}

/* Runs the loop for ms. */
static void run_for(struct fx *fx, uint64_t ms)
{
    static const int never = 0;
    (void)run_until(fx, &never, 1, ms);
}

static void expect_once(const struct result *r, int err)
{
    assert_int_equal(r->calls, 1);
    assert_int_equal(r->reentrant, 0);
    if (r->err != err) fail_msg("err %d (%s), wanted %d", r->err, r->error, err);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_ok_body(void **state)
{
    struct fx *fx = *state;
    struct result r;
    assert_non_null(get(fx, "/ok", &r));
    assert_int_equal(wk_http_in_flight(fx->http), 1);
    assert_int_equal(r.calls, 0); /* never from inside wk_http_start */
    assert_int_equal(run_until(fx, &completions, 1, 5000), 0);
    expect_once(&r, WK_HTTP_OK);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_int_equal(r.body_len, 5);
    assert_int_equal(r.retry_after_ms, -1);
    assert_string_equal(r.error, "");
    assert_true(r.total_ms > 0);
    assert_int_equal(wk_http_in_flight(fx->http), 0);
}

static void test_post_body_and_headers(void **state)
{
    struct fx *fx = *state;
    struct result r, e;
    char url[128];
    const char *headers[] = {"X-Test: yes", "Content-Type: text/plain", NULL};
    wk_http_req_t req = {.method = "POST", .url = url, .body = "a b c", .body_len = 5,
                         .headers = headers, .timeout_ms = 5000, .max_response = 1000};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", fx->srv.port);
    memset(&r, 0, sizeof(r));
    assert_non_null(wk_http_start(fx->http, &req, on_resp, &r));
    /* Empty POST, and a GET with no headers: nothing left over from the first. */
    assert_non_null(start_req(fx, fx->http, "POST", "/echo", NULL, 5000, 1000, &e));
    assert_int_equal(run_until(fx, &completions, 2, 5000), 0);
    expect_once(&r, WK_HTTP_OK);
    assert_string_equal(r.body, "POST yes a b c");
    expect_once(&e, WK_HTTP_OK);
    assert_string_equal(e.body, "POST - ");
    assert_non_null(get(fx, "/echo", &r));
    assert_int_equal(run_until(fx, &completions, 3, 5000), 0);
    assert_string_equal(r.body, "GET - ");
}

static void test_bad_args(void **state)
{
    struct fx *fx = *state;
    struct result r = {0};
    wk_http_req_t req = {.method = "GET"}; /* no URL */
    assert_null(wk_http_start(fx->http, &req, on_resp, &r));
    assert_null(wk_http_start(NULL, &req, on_resp, &r));
    assert_null(wk_http_new(NULL, 0));
    wk_http_cancel(NULL);
    run_for(fx, 50);
    assert_int_equal(r.calls, 0); /* nothing started, nothing called back */
    assert_int_equal(wk_http_in_flight(fx->http), 0);
}

/* Between calls the client holds no active handle (its idle keep-alive connections are
 * not watched): a loop with nothing else to do ends although the client still exists. */
static void test_idle_client_lets_loop_end(void **state)
{
    struct fx *fx = *state;
    struct result r;
    assert_non_null(get(fx, "/ok", &r));
    assert_int_equal(run_until(fx, &completions, 1, 5000), 0);
    expect_once(&r, WK_HTTP_OK);
    srv_stop(&fx->srv);
    uv_close((uv_handle_t *)&fx->guard, NULL);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_non_null(fx->http); /* freed by teardown */
}

static void test_500(void **state)
{
    struct fx *fx = *state;
    struct result r;
    assert_non_null(get(fx, "/500", &r));
    assert_int_equal(run_until(fx, &completions, 1, 5000), 0);
    expect_once(&r, WK_HTTP_OK); /* a status arrived: OK, whatever it is */
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body, "boom");
    assert_int_equal(r.retry_after_ms, -1);
}

static void test_429_retry_after(void **state)
{
    struct fx *fx = *state;
    struct result secs, date, past, junk;
    assert_non_null(get(fx, "/ra/secs", &secs));
    assert_non_null(get(fx, "/ra/date", &date));
    assert_non_null(get(fx, "/ra/past", &past));
    assert_non_null(get(fx, "/ra/junk", &junk));
    assert_int_equal(run_until(fx, &completions, 4, 5000), 0);
    expect_once(&secs, WK_HTTP_OK);
    assert_int_equal(secs.status, 429);
    assert_string_equal(secs.body, "slow down");
    assert_int_equal(secs.retry_after_ms, 2000);
    expect_once(&date, WK_HTTP_OK);
    assert_int_equal(date.status, 429);
    /* now + 5 s written to the second: between 4 and 5 s away, less the trip. */
    assert_in_range(date.retry_after_ms, 3000, 5000);
    expect_once(&past, WK_HTTP_OK);
    assert_int_equal(past.retry_after_ms, 0);
    expect_once(&junk, WK_HTTP_OK);
    assert_int_equal(junk.retry_after_ms, -1);
}

static void test_too_big(void **state)
{
    struct fx *fx = *state;
    struct result cl, chunked, fits;
    assert_non_null(start_req(fx, fx->http, "GET", "/big", NULL, 5000, 1000, &cl));
    assert_non_null(start_req(fx, fx->http, "GET", "/bigchunked", NULL, 5000, 1000, &chunked));
    assert_non_null(start_req(fx, fx->http, "GET", "/big", NULL, 5000, 5000, &fits));
    assert_int_equal(run_until(fx, &completions, 3, 5000), 0);
    expect_once(&cl, WK_HTTP_ETOOBIG);
    assert_int_equal(cl.status, 0);
    assert_int_equal(cl.body_len, 0);
    assert_string_equal(cl.error, "response larger than 1000 bytes");
    expect_once(&chunked, WK_HTTP_ETOOBIG); /* no Content-Length: cut while reading */
    assert_string_equal(chunked.error, "response larger than 1000 bytes");
    expect_once(&fits, WK_HTTP_OK);
    assert_int_equal(fits.body_len, 5000);
}

static void test_timeout(void **state)
{
    struct fx *fx = *state;
    struct result r;
    assert_non_null(start_req(fx, fx->http, "GET", "/hang", NULL, 200, 1000, &r));
    assert_int_equal(run_until(fx, &completions, 1, 5000), 0);
    expect_once(&r, WK_HTTP_ETIMEOUT);
    assert_int_equal(r.status, 0);
    assert_true(r.error[0] != '\0');
    assert_true(r.total_ms >= 190 && r.total_ms < 2000);
    run_for(fx, 100);
    assert_int_equal(fx->srv.open, 0); /* curl dropped the connection */
}

static void test_connect_refused(void **state)
{
    struct fx *fx = *state;
    struct result r;
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    char url[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    /* A port that was just free: bound, then closed without listening. */
    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", ntohs(a.sin_port));
    assert_non_null(start_req(fx, fx->http, "GET", url, NULL, 5000, 1000, &r));
    assert_int_equal(run_until(fx, &completions, 1, 5000), 0);
    expect_once(&r, WK_HTTP_ECONNECT);
    assert_true(r.error[0] != '\0');
}

static void test_other_errors(void **state)
{
    struct fx *fx = *state;
    struct result closed, ftp;
    assert_non_null(get(fx, "/close", &closed)); /* empty reply */
    assert_non_null(get(fx, "ftp://127.0.0.1/x", &ftp)); /* refused, but not from start */
    assert_int_equal(ftp.calls, 0);
    assert_int_equal(run_until(fx, &completions, 2, 5000), 0);
    expect_once(&closed, WK_HTTP_EIO);
    expect_once(&ftp, WK_HTTP_EIO);
    assert_true(ftp.error[0] != '\0');
}

#define MANY 300

static void test_concurrent(void **state)
{
    struct fx *fx = *state;
    static struct result r[MANY];
    char path[64], want[32];
    for (int i = 0; i < MANY; i++) {
        snprintf(path, sizeof(path), "/delay/100/body-%d", i);
        assert_non_null(get(fx, path, &r[i]));
    }
    assert_int_equal(wk_http_in_flight(fx->http), MANY);
    assert_int_equal(run_until(fx, &completions, MANY, 10000), 0);
    for (int i = 0; i < MANY; i++) {
        snprintf(want, sizeof(want), "body-%d", i);
        expect_once(&r[i], WK_HTTP_OK);
        assert_int_equal(r[i].status, 200);
        assert_string_equal(r[i].body, want);
    }
    assert_int_equal(wk_http_in_flight(fx->http), 0);
    assert_int_equal(fx->srv.requests, MANY);
    assert_true(fx->srv.max_in_flight >= MANY * 2 / 3); /* at once, not one by one */
}

/* Each response starts the next request from its callback: one connection serves all. */
struct chain {
    struct fx *fx;
    struct result r;
    int left, ok;
};

static void on_chain(void *arg, const wk_http_resp_t *resp)
{
    struct chain *ch = arg;
    if (in_start) ch->r.reentrant = 1;
    if (resp->err == WK_HTTP_OK && resp->status == 200) ch->ok++;
    if (--ch->left > 0) {
        char url[64];
        wk_http_req_t req = {.url = url, .timeout_ms = 5000};
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", ch->fx->srv.port);
        in_start = 1;
        if (!wk_http_start(ch->fx->http, &req, on_chain, ch)) ch->left = 0;
        in_start = 0;
    }
    completions++;
}

static void test_reuse(void **state)
{
    struct fx *fx = *state;
    struct chain ch = {.fx = fx, .left = 10};
    char url[64];
    wk_http_req_t req = {.url = url, .timeout_ms = 5000};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", fx->srv.port);
    assert_non_null(wk_http_start(fx->http, &req, on_chain, &ch));
    assert_int_equal(run_until(fx, &completions, 10, 5000), 0);
    assert_int_equal(ch.ok, 10);
    assert_int_equal(ch.r.reentrant, 0);
    assert_int_equal(fx->srv.requests, 10);
    assert_int_equal(fx->srv.accepted, 1);
}

static void test_max_conns_per_host(void **state)
{
    struct fx *fx = *state;
    struct result r[12];
    wk_http_t *h = wk_http_new(&fx->loop, 2);
    assert_non_null(h);
    for (int i = 0; i < 12; i++)
        assert_non_null(start_req(fx, h, "GET", "/delay/20", NULL, 5000, 1000, &r[i]));
    assert_int_equal(run_until(fx, &completions, 12, 5000), 0);
    for (int i = 0; i < 12; i++) expect_once(&r[i], WK_HTTP_OK);
    assert_true(fx->srv.accepted <= 2);
    assert_true(fx->srv.max_in_flight <= 2);
    wk_http_free(h);
}

static void on_cancel_timer(uv_timer_t *t) { wk_http_cancel(t->data); }

static void test_cancel(void **state)
{
    struct fx *fx = *state;
    struct result r, other;
    uv_timer_t t;
    wk_http_call_t *c = get(fx, "/hang", &r);
    assert_non_null(c);
    assert_non_null(get(fx, "/delay/150", &other));
    uv_timer_init(&fx->loop, &t);
    t.data = c;
    uv_timer_start(&t, on_cancel_timer, 50, 0);
    assert_int_equal(run_until(fx, &completions, 1, 5000), 0);
    expect_once(&r, WK_HTTP_ECANCELED);
    assert_int_equal(r.status, 0);
    assert_int_equal(wk_http_in_flight(fx->http), 1);
    assert_int_equal(run_until(fx, &completions, 2, 5000), 0);
    expect_once(&other, WK_HTTP_OK); /* untouched by its neighbour's cancel */
    run_for(fx, 100);
    assert_int_equal(r.calls, 1);
    assert_int_equal(fx->srv.in_flight, 0); /* the hung connection was dropped */
    uv_close((uv_handle_t *)&t, NULL);
}

static void test_cancel_before_run(void **state)
{
    struct fx *fx = *state;
    struct result r;
    wk_http_call_t *c = get(fx, "/ok", &r);
    wk_http_cancel(c);
    expect_once(&r, WK_HTTP_ECANCELED); /* before wk_http_cancel returned */
    run_for(fx, 100);
    assert_int_equal(r.calls, 1);
    assert_int_equal(fx->srv.requests, 0);
}

static void test_free_in_flight(void **state)
{
    struct fx *fx = *state;
    static struct result r[20];
    for (int i = 0; i < 20; i++) assert_non_null(get(fx, i % 2 ? "/hang" : "/delay/500", &r[i]));
    run_for(fx, 100); /* connected and sent */
    assert_int_equal(fx->srv.in_flight, 20);
    wk_http_free(fx->http);
    fx->http = NULL;
    for (int i = 0; i < 20; i++) expect_once(&r[i], WK_HTTP_ECANCELED);
    assert_int_equal(completions, 20);
    run_for(fx, 100);
    assert_int_equal(fx->srv.open, 0); /* the connections went with it */
    /* teardown: uv_run returns and the loop closes, so no handle was left behind */
}

struct freer {
    struct fx *fx;
    struct result *hung;
    int hung_calls_seen;
    int open_handles; /* not closing, right after wk_http_free */
};

static void count_open(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) ++*(int *)arg;
}

static void on_free_from_cb(void *arg, const wk_http_resp_t *resp)
{
    struct freer *f = arg;
    (void)resp;
    wk_http_free(f->fx->http);
    f->fx->http = NULL;
    f->hung_calls_seen = f->hung->calls; /* called back before wk_http_free returned */
    /* Even freed from a callback, its handles are closing at once: the worker's shutdown
     * closes every other handle with a uv_walk right after. */
    uv_walk(&f->fx->loop, count_open, &f->open_handles);
    f->open_handles -= 2 + 2 * f->fx->srv.open; /* the listener, the guard, connections */
    completions++;
}

static void test_free_in_callback(void **state)
{
    struct fx *fx = *state;
    struct result hung;
    struct freer f = {.fx = fx, .hung = &hung};
    char url[64];
    wk_http_req_t req = {.url = url, .timeout_ms = 5000};
    assert_non_null(get(fx, "/hang", &hung));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", fx->srv.port);
    assert_non_null(wk_http_start(fx->http, &req, on_free_from_cb, &f));
    assert_int_equal(run_until(fx, &completions, 2, 5000), 0);
    assert_int_equal(f.hung_calls_seen, 1);
    assert_int_equal(f.open_handles, 0);
    expect_once(&hung, WK_HTTP_ECANCELED);
    assert_null(fx->http);
}

static void test_free_before_run(void **state)
{
    struct fx *fx = *state;
    struct result r[3];
    for (int i = 0; i < 3; i++) assert_non_null(get(fx, "/ok", &r[i]));
    wk_http_free(fx->http);
    fx->http = NULL;
    for (int i = 0; i < 3; i++) expect_once(&r[i], WK_HTTP_ECANCELED);
    wk_http_free(NULL);
    assert_int_equal(wk_http_in_flight(NULL), 0);
}

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(wk_http_strerror(WK_HTTP_OK), "ok");
    assert_string_equal(wk_http_strerror(WK_HTTP_ETIMEOUT), "timeout");
    assert_string_equal(wk_http_strerror(42), "unknown");
}

/* The load: many slow calls on one loop. Reports what was in flight at once at
 * the server and the process's memory. */
#define LOAD 1000

static long status_kb(const char *key)
{
    char line[256];
    long v = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, strlen(key)) == 0) v = strtol(line + strlen(key), NULL, 10);
    fclose(f);
    return v;
}

static void test_load_1000(void **state)
{
    struct fx *fx = *state;
    static struct result r[LOAD];
    struct rlimit rl;
    uint64_t t0;
    long rss0 = status_kb("VmRSS:");
    char path[64];

    /* Two descriptors a call (both ends are ours). */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * LOAD + 100) {
        rl.rlim_cur = rl.rlim_max < 2 * LOAD + 100 ? rl.rlim_max : 2 * LOAD + 100;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < 2 * LOAD + 100) skip();
    }
    t0 = uv_hrtime();
    for (int i = 0; i < LOAD; i++) {
        snprintf(path, sizeof(path), "/delay/100/b%d", i);
        assert_non_null(get(fx, path, &r[i]));
    }
    assert_int_equal(run_until(fx, &completions, LOAD, 30000), 0);
    for (int i = 0; i < LOAD; i++) {
        snprintf(path, sizeof(path), "b%d", i);
        expect_once(&r[i], WK_HTTP_OK);
        assert_string_equal(r[i].body, path);
    }
    print_message("load: %d calls, 100 ms latency: max in flight %d (server), %.0f ms; "
                  "RSS %ld kB before, %ld kB after, peak %ld kB (client and server)\n",
                  LOAD, fx->srv.max_in_flight, (double)(uv_hrtime() - t0) / 1e6, rss0,
                  status_kb("VmRSS:"), status_kb("VmHWM:"));
    assert_true(fx->srv.max_in_flight >= LOAD / 2);
}

/* TEST_FILTER=test_load_1000 runs one test (cmocka's wildcards), e.g. to read its RSS
 * without the others' allocations. */
int main(void)
{
    if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ok_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_body_and_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_client_lets_loop_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_500, setup, teardown),
        cmocka_unit_test_setup_teardown(test_429_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_conns_per_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_before_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_before_run, setup, teardown),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test_setup_teardown(test_load_1000, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
