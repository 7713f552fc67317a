/* workers/redis.c — hiredis async + libuv, with the timeouts hiredis 0.14 lacks.
 *
 * One uv timer per connection serves whichever wait the state needs: the backoff before
 * a reconnect (DOWN), the resolve deadline (RESOLVING), or the watchdog (CONNECTING, UP).
 * The watchdog runs at least every CHECK_MS: it looks for an overdue connect or reply and
 * re-arms for the earliest deadline, so a busy pipeline costs no timer operation per
 * command. It also notices a socket that libuv stopped polling after an error, which
 * hiredis's libuv adapter ignores (a refused connect or a reset connection would
 * otherwise hang until a deadline, or forever on an idle subscription).
 *
 * hiredis lifetimes: a context is never freed from its own connect/disconnect callbacks
 * (hiredis frees it itself after a failed connect or a disconnect). Freeing it from a
 * reply callback is deferred by hiredis until that callback returns. r->ac is cleared
 * before we free a context, so its disconnect callback can tell the drop was ours. */
#define _POSIX_C_SOURCE 200809L
#include "workers/redis.h"

#include <arpa/inet.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "queue/queue.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CHECK_MS 500 /* the longest the watchdog sleeps while connected */

enum { ST_DOWN, ST_RESOLVING, ST_CONNECTING, ST_UP, ST_CLOSED };

/* One command waiting for its reply, in a circular list in sending order. */
struct pending {
    struct pending *prev, *next;
    uint64_t deadline; /* loop time (ms) */
    wk_redis_reply_fn fn;
    void *data;
};

struct wk_redis {
    uv_loop_t *loop;
    redisAsyncContext *ac; /* NULL unless CONNECTING or UP */
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    int state, failures, timeout_ms, port;
    int resolving;    /* a uv_getaddrinfo is outstanding (gai in use) */
    int timer_closed; /* wk_redis_free: the timer's close callback ran */
    char *name, *host;
    struct pending pending; /* list head */
    struct pending *spare;  /* free records, linked by next */
    wk_redis_up_fn on_up;
    void *data;
    char *channel;
    wk_redis_message_fn on_message;
    uint64_t deadline; /* loop time by which the connect (CONNECTING) or the SUBSCRIBE
                        * confirmation (UP) is due; 0: none */
};

static void on_timer(uv_timer_t *t);

/* Waits before the next connect: 100 ms doubling up to 5 s while no answer comes. */
static void schedule_reconnect(wk_redis_t *r)
{
    int shift = r->failures < 6 ? r->failures : 6;
    int delay = BACKOFF_MIN_MS << shift;
    if (delay > BACKOFF_MAX_MS) delay = BACKOFF_MAX_MS;
    r->failures++;
    r->state = ST_DOWN;
    uv_timer_start(&r->timer, on_timer, (uint64_t)delay, 0);
}

/* Drops the current context (ours to free: not called from its connect/disconnect
 * callbacks). Pending commands are called back with NULL. */
static void drop(wk_redis_t *r)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->deadline = 0;
    uv_timer_stop(&r->timer);
    if (ac) redisAsyncFree(ac);
}

/* Subscription replies: the confirmation, then one per message (NULL on disconnect). */
static void on_sub(redisAsyncContext *ac, void *reply, void *privdata)
{
    wk_redis_t *r = ac->data;
    redisReply *m = reply;
    (void)privdata;

    if (!m || r->ac != ac || m->type != REDIS_REPLY_ARRAY || m->elements < 3 ||
        m->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(m->element[0]->str, "subscribe") == 0)
        r->deadline = r->failures = 0;
    else if (strcmp(m->element[0]->str, "message") == 0 &&
             m->element[2]->type == REDIS_REPLY_STRING)
        r->on_message(r, m->element[2]->str, m->element[2]->len, r->data);
}

/* Sends SUBSCRIBE; the watchdog drops the connection if it is not confirmed in time. */
static void subscribe_now(wk_redis_t *r)
{
    if (redisAsyncCommand(r->ac, on_sub, NULL, "SUBSCRIBE %s", r->channel) == REDIS_OK)
        r->deadline = uv_now(r->loop) + (uint64_t)r->timeout_ms;
}

/* A refused AUTH: nothing else will work on this connection; drop it (and retry later). */
static void on_auth(redisAsyncContext *ac, void *reply, void *data)
{
    redisReply *x = reply;
    wk_redis_t *r = ac->data;
    (void)data;
    if (x && x->type == REDIS_REPLY_ERROR && r && r->ac == ac) {
        LOG_ERR("redis %s: AUTH refused: %.100s", r->name, x->str);
        redisAsyncDisconnect(ac);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    wk_redis_t *r = ac->data;
    if (r->ac != ac) return;
    uv_timer_stop(&r->timer);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns */
        LOG_WARN("redis %s: cannot connect to %s:%d: %s", r->name, r->host, r->port,
                 ac->c.errstr);
        r->ac = NULL;
        schedule_reconnect(r);
        return;
    }
    if (r->failures > 0) LOG_INFO("redis %s: connected to %s:%d", r->name, r->host, r->port);
    /* AUTH goes first; commands sent from here on queue behind it */
    const char *auth[3];
    int argc = q_redis_auth_argv(auth);
    if (argc && redisAsyncCommandArgv((redisAsyncContext *)ac, on_auth, NULL, argc, auth, NULL) !=
                    REDIS_OK) {
        LOG_WARN("redis %s: cannot send AUTH", r->name);
        redisAsyncDisconnect((redisAsyncContext *)ac);
        return;
    }
    r->state = ST_UP; /* failures are forgotten at the first answer */
    r->deadline = 0;
    uv_timer_start(&r->timer, on_timer, CHECK_MS, 0); /* the watchdog */
    if (r->channel) subscribe_now(r);
    if (r->on_up) r->on_up(r, r->data);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    wk_redis_t *r = ac->data;
    if (r->ac != ac) return; /* dropped by us */
    LOG_WARN("redis %s: connection lost: %s", r->name,
             status == REDIS_OK ? "closed" : ac->c.errstr);
    r->ac = NULL;
    r->deadline = 0;
    uv_timer_stop(&r->timer);
    schedule_reconnect(r);
}

static void connect_to(wk_redis_t *r, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, r->port);
    if (!ac || ac->err) {
        LOG_WARN("redis %s: cannot connect to %s:%d: %s", r->name, r->host, r->port,
                 ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        LOG_ERR("redis %s: cannot attach to the loop", r->name);
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = ST_CONNECTING;
    r->deadline = uv_now(r->loop) + (uint64_t)r->timeout_ms;
    uv_timer_start(&r->timer, on_timer, CHECK_MS, 0); /* the watchdog */
}

static void free_now(wk_redis_t *r)
{
    while (r->spare) {
        struct pending *p = r->spare;
        r->spare = p->next;
        free(p);
    }
    free(r->name);
    free(r->host);
    free(r->channel);
    free(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    wk_redis_t *r = req->data;
    char ip[INET6_ADDRSTRLEN] = "";

    r->resolving = 0;
    if (r->state == ST_CLOSED) {
        uv_freeaddrinfo(res);
        if (r->timer_closed) free_now(r);
        return;
    }
    uv_timer_stop(&r->timer);
    if (status == 0 && res)
        uv_ip_name(res->ai_addr, ip, sizeof(ip));
    uv_freeaddrinfo(res);
    if (!ip[0]) {
        LOG_WARN("redis %s: cannot resolve %s: %s", r->name, r->host,
                 status ? uv_strerror(status) : "no address");
        schedule_reconnect(r);
        return;
    }
    connect_to(r, ip);
}

static void start_connect(wk_redis_t *r)
{
    unsigned char buf[sizeof(struct in6_addr)];
    struct addrinfo hints;
    int rc;

    if (inet_pton(AF_INET, r->host, buf) == 1 || inet_pton(AF_INET6, r->host, buf) == 1) {
        connect_to(r, r->host);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r->gai.data = r;
    rc = uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->host, NULL, &hints);
    if (rc != 0) {
        LOG_WARN("redis %s: cannot resolve %s: %s", r->name, r->host, uv_strerror(rc));
        schedule_reconnect(r);
        return;
    }
    r->resolving = 1;
    r->state = ST_RESOLVING;
    uv_timer_start(&r->timer, on_timer, (uint64_t)r->timeout_ms, 0);
}

/* The watchdog (CONNECTING, UP): reconnects if the connect or a reply is overdue or the
 * socket is no longer polled, else runs again at the earliest deadline or after CHECK_MS. */
static void watchdog(wk_redis_t *r)
{
    const redisLibuvEvents *ev = r->ac->ev.data;
    uint64_t now = uv_now(r->loop), next = now + CHECK_MS;
    uint64_t first = r->deadline;
    int up = r->state == ST_UP;

    for (struct pending *p = r->pending.next; p != &r->pending; p = p->next)
        if (!first || p->deadline < first) first = p->deadline;
    if (first && first <= now) {
        LOG_WARN("redis %s: %s %s:%d in time: reconnecting", r->name,
                 up ? "no reply from" : "could not connect to", r->host, r->port);
    } else if (!ev || !uv_is_active((const uv_handle_t *)&ev->handle)) {
        LOG_WARN("redis %s: socket error %s %s:%d: reconnecting", r->name,
                 up ? "on the connection to" : "connecting to", r->host, r->port);
    } else {
        uv_timer_start(&r->timer, on_timer, (first && first < next ? first : next) - now, 0);
        return;
    }
    drop(r);
    schedule_reconnect(r);
}

static void on_timer(uv_timer_t *t)
{
    wk_redis_t *r = t->data;

    switch (r->state) {
    case ST_DOWN:
        start_connect(r);
        break;
    case ST_RESOLVING:
        /* cancels it if it has not started; either way on_resolved follows */
        LOG_WARN("redis %s: resolving %s takes too long", r->name, r->host);
        uv_cancel((uv_req_t *)&r->gai);
        break;
    case ST_CONNECTING:
    case ST_UP:
        watchdog(r);
        break;
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    wk_redis_t *r = ac->data;
    struct pending *p = privdata;
    wk_redis_reply_fn fn = p->fn;
    void *data = p->data;

    p->prev->next = p->next;
    p->next->prev = p->prev;
    p->next = r->spare;
    r->spare = p;
    if (reply) r->failures = 0;
    fn(r, reply, data);
}

wk_redis_t *wk_redis_new(uv_loop_t *loop, const char *name, const char *host, int port,
                         int timeout_ms, wk_redis_up_fn on_up, void *data)
{
    wk_redis_t *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->name = strdup(name);
    r->host = strdup(host);
    if (!r->name || !r->host) {
        free_now(r);
        return NULL;
    }
    r->loop = loop;
    r->port = port;
    r->timeout_ms = timeout_ms;
    r->on_up = on_up;
    r->data = data;
    r->pending.prev = r->pending.next = &r->pending;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    start_connect(r);
    return r;
}

static void on_timer_closed(uv_handle_t *h)
{
    wk_redis_t *r = h->data;
    r->timer_closed = 1;
    if (!r->resolving) free_now(r);
}

void wk_redis_free(wk_redis_t *r)
{
    if (!r) return;
    r->state = ST_CLOSED;
    drop(r);
    if (r->resolving) uv_cancel((uv_req_t *)&r->gai);
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

int wk_redis_connected(const wk_redis_t *r)
{
    return r && r->state == ST_UP && r->ac &&
           !(r->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING));
}

int wk_redis_command(wk_redis_t *r, int argc, const char **argv, const size_t *argvlen,
                     int timeout_ms, wk_redis_reply_fn fn, void *data)
{
    struct pending *p;

    if (!wk_redis_connected(r)) return -1;
    p = r->spare;
    if (p)
        r->spare = p->next;
    else if (!(p = malloc(sizeof(*p))))
        return -1;
    p->fn = fn;
    p->data = data;
    p->deadline = uv_now(r->loop) + (uint64_t)timeout_ms;
    if (redisAsyncCommandArgv(r->ac, on_reply, p, argc, argv, argvlen) != REDIS_OK) {
        p->next = r->spare;
        r->spare = p;
        return -1;
    }
    p->prev = r->pending.prev;
    p->next = &r->pending;
    p->prev->next = p;
    r->pending.prev = p;
    return 0;
}

void wk_redis_flush(wk_redis_t *r)
{
    int done = 0;
    /* only writes: an error stays in the context and drops the connection at the next
     * write event, outside the caller's (possibly hiredis) callback */
    if (wk_redis_connected(r)) (void)redisBufferWrite(&r->ac->c, &done);
}

int wk_redis_subscribe(wk_redis_t *r, const char *channel, wk_redis_message_fn fn)
{
    r->channel = strdup(channel);
    if (!r->channel) return -1;
    r->on_message = fn;
    if (wk_redis_connected(r)) subscribe_now(r);
    return 0;
}
