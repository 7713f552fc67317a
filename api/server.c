/* api/server.c — civetweb set-up, per-thread Redis connections, dispatch, shutdown. */
#include "api/api.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/cache.h"
#include "api/conn.h"
#include "api/gate.h"
#include "api/http.h"
#include "api/route.h"
#include "api/wait.h"
#include "common/config.h"
#include "common/log.h"
#include "common/pg.h"
#include "queue/queue.h"

#define REQUEST_TIMEOUT_MS "30000"   /* reading a request, writing a reply */
#define KEEP_ALIVE_TIMEOUT_MS "2000" /* an idle keep-alive connection holds a thread */
#define SLOW_REQUEST_MS 500.0       /* a request this slow is logged as a warning */

/* What every request thread shares (mg_start's user data). */
typedef struct server {
    cm_pg_pool_t *pg;
    api_waits_t *waits;
    api_cache_t *cache;
    api_authcache_t *auth;
    q_batcher_t *enq;
    api_conns_t *conns;
} server_t;

/* mg_stop runs here while the main thread pokes the listener (see stop_server). */
struct stopper {
    struct mg_context *ctx;
    atomic_int done;
};

static void *run_mg_stop(void *arg)
{
    struct stopper *st = arg;
    mg_stop(st->ctx);
    st->done = 1;
    return NULL;
}

/* Stops civetweb. Its listener thread polls with a 2 s quantum before it notices the
 * stop; a connection to our own port wakes it, so a stop takes milliseconds. */
static void stop_server(struct mg_context *ctx)
{
    struct mg_server_port ports[4];
    struct stopper st = {ctx, 0};
    pthread_t t;
    int n = mg_get_server_ports(ctx, 4, ports);

    if (pthread_create(&t, NULL, run_mg_stop, &st) != 0) {
        mg_stop(ctx);
        return;
    }
    for (int round = 0; round < 100 && !st.done; round++) {
        struct timespec pause = {0, 20 * 1000000L};
        nanosleep(&pause, NULL);
        for (int i = 0; i < n && !st.done; i++) {
            struct sockaddr_in a = {.sin_family = AF_INET,
                                    .sin_port = htons((uint16_t)ports[i].port),
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            int fd = (ports[i].protocol & 1) ? socket(AF_INET, SOCK_STREAM, 0) : -1;
            if (fd < 0) continue;
            connect(fd, (struct sockaddr *)&a, sizeof(a)); /* refused once it is closed */
            close(fd);
        }
    }
    pthread_join(t, NULL);
}

/* This request thread's Redis connection (created by on_init_thread). */
static _Thread_local q_conn_t *tl_q;

static q_conn_t *thread_conn(void)
{
    if (!tl_q)
        tl_q = q_conn_new(cm_cfg.redis_host, cm_cfg.redis_port, cm_cfg.redis_prefix,
                          cm_cfg.redis_timeout_ms);
    return tl_q;
}

static void *on_init_thread(const struct mg_context *ctx, int thread_type)
{
    const server_t *srv = mg_get_user_data(ctx);
    q_conn_t *q;

    if (thread_type == 1) api_conn_thread_start(srv->conns);
    /* 1: a request thread. It connects now rather than at its first request that needs
     * Redis, so that a connection is not set up in the middle of a load (a Redis starved
     * of CPU took seconds to accept one: see in_background in ops/services.sh). If Redis
     * is down, the first request connects. */
    if (thread_type == 1 && (q = thread_conn())) (void)q_conn_redis(q);
    return NULL;
}

static void on_exit_thread(const struct mg_context *ctx, int thread_type, void *ptr)
{
    (void)ctx;
    (void)thread_type;
    (void)ptr;
    q_conn_free(tl_q);
    tl_q = NULL;
}

/* A connection starts or ends on this request thread (see api/conn.h). */
static int on_init_connection(const struct mg_connection *conn, void **data)
{
    (void)conn;
    *data = NULL;
    api_conn_opened(api_conn_self());
    return 0;
}

static void on_connection_close(const struct mg_connection *conn)
{
    (void)conn;
    api_conn_settle(api_conn_self()); /* its socket is closed after this */
}

/* civetweb answers a request it cannot parse itself, without begin_request: the
 * deferred reply of the request before it goes first. */
static int on_http_error(struct mg_connection *conn, int status, const char *msg)
{
    (void)conn;
    (void)status;
    (void)msg;
    api_conn_settle(api_conn_self());
    return 1; /* civetweb writes its error page */
}

static int on_log_message(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    LOG_WARN("civetweb: %s", message);
    return 1;
}

/* Every request: route, authenticate, check the query, run the handler, log one line. */
static int on_request(struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const server_t *srv = ri->user_data;
    api_req_t r = {
        .conn = conn, .ri = ri, .pg = srv->pg, .waits = srv->waits, .cache = srv->cache,
        .auth = srv->auth, .enq = srv->enq, .slot = api_conn_self()};
    const api_route_t *rt;
    struct timespec t0, t1;
    char allow[64], hdr[96];
    int st;

    api_conn_settle(r.slot); /* the reply before this one is written first */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    api_request_id(mg_get_header(conn, "X-Request-Id"), r.request_id);
    /* HEAD is GET without the body (api_reply leaves it out) */
    rt = api_route_find(strcmp(ri->request_method, "HEAD") == 0 ? "GET" : ri->request_method,
                        ri->local_uri, r.param, sizeof(r.param), allow, sizeof(allow));
    if (!rt && allow[0]) {
        snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
        st = api_error(&r, 405, "METHOD_NOT_ALLOWED", json_pack("{s:s}", "allow", allow), hdr,
                       "method not allowed; this path accepts %s", allow);
    } else if (!rt) {
        st = api_error(&r, 404, "NOT_FOUND", NULL, NULL, "no such endpoint");
    } else if (!(r.q = thread_conn())) {
        st = api_error(&r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                       "out of resources; try again shortly");
    } else if ((st = api_gate(&r, rt->auth, (api_bucket_t)rt->bucket)) != 0) {
        /* sent: 401, 403, 429 or 503 */
    } else if (api_query_check(&r, rt->query) != 0) {
        st = r.status;
    } else {
        st = rt->handler(&r);
    }
    if (r.q && r.cache) api_cache_check(r.cache, r.q); /* after any Redis call */
    if (!r.status) { /* a handler that sent nothing: a bug, but answer */
        LOG_REQ_ERR(r.request_id, "handler sent no reply");
        api_error(&r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
    }
    st = r.status;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (st >= 500)
        LOG_REQ_ERR(r.request_id, "%s %s %d %.3fms", ri->request_method, ri->local_uri, st, ms);
    else if (ms >= SLOW_REQUEST_MS && !api_query(&r, "wait")) /* long-polls wait on purpose */
        LOG_REQ_WARN(r.request_id, "slow: %s %s %d %.3fms", ri->request_method, ri->local_uri,
                     st, ms);
    else
        LOG_REQ_INFO(r.request_id, "%s %s %d %.3fms", ri->request_method, ri->local_uri, st, ms);
    return st;
}

int api_main(int argc, char **argv)
{
    server_t srv = {0};
    struct mg_callbacks cb = {0};
    struct mg_context *ctx;
    char threads[16], channel[256], auth_channel[256], prefix[128], job_keys[160];
    sigset_t sigs, old;
    int sig, waiters, rc = 1;

    if (argc > 1) {
        fprintf(stderr, "usage: conveyor %s (configured by CONVEYOR_* variables)\n", argv[0]);
        return 2;
    }
    if (!cm_cfg.operator_token || !*cm_cfg.operator_token) {
        fprintf(stderr, "conveyor api: CONVEYOR_OPERATOR_TOKEN is not set; refusing to start "
                        "without an operator credential\n");
        return 2;
    }
    if (!cm_cfg.jwt_secret || strlen(cm_cfg.jwt_secret) < 32) {
        fprintf(stderr, "conveyor api: CONVEYOR_JWT_SECRET must be set to at least 32 bytes "
                        "(e.g. openssl rand -hex 32)\n");
        return 2;
    }
    /* Request threads inherit the mask: only this thread takes SIGTERM/SIGINT. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);

    if (!(srv.pg = cm_pg_pool_new(cm_cfg.pg_pool_size))) goto fail_pg;
    /* Long-polls hold a request thread each: leave a quarter of them for other work. */
    waiters = cm_cfg.api_threads - (cm_cfg.api_threads / 4 > 1 ? cm_cfg.api_threads / 4 : 1);
    if (cm_cfg.max_waiters < waiters) waiters = cm_cfg.max_waiters;
    snprintf(prefix, sizeof(prefix), "%s:", cm_cfg.redis_prefix);
    q_channel_done(prefix, channel, sizeof(channel));
    q_key_job(job_keys, sizeof(job_keys), prefix, "");
    if (!(srv.cache = api_cache_new(API_CACHE_ENTRIES, API_CACHE_BYTES, job_keys)))
        goto fail_cache;
    if (!(srv.auth = api_authcache_new())) goto fail_auth;
    api_auth_channel(auth_channel, sizeof(auth_channel), prefix);
    srv.waits = api_waits_new(cm_cfg.redis_host, cm_cfg.redis_port, cm_cfg.redis_timeout_ms,
                              channel, waiters, srv.cache, auth_channel, srv.auth);
    if (!srv.waits) goto fail_waits;
    if (api_gate_flusher_start(srv.auth) != 0) goto fail_flusher;
    if (!(srv.conns = api_conns_new(cm_cfg.api_threads))) goto fail_conns;
    if (!(srv.enq = q_batcher_new(cm_cfg.redis_host, cm_cfg.redis_port, cm_cfg.redis_prefix,
                                  cm_cfg.redis_timeout_ms)))
        goto fail_batcher;

    snprintf(threads, sizeof(threads), "%d", cm_cfg.api_threads);
    const char *options[] = {
        "listening_ports", cm_cfg.listen,
        "num_threads", threads,
        "tcp_nodelay", "1", /* without it a reply in several writes waits ~40 ms */
        "enable_keep_alive", "yes",
        "request_timeout_ms", REQUEST_TIMEOUT_MS,
        "keep_alive_timeout_ms", KEEP_ALIVE_TIMEOUT_MS,
        NULL,
    };
    cb.begin_request = on_request;
    cb.init_thread = on_init_thread;
    cb.init_connection = on_init_connection;
    cb.connection_close = on_connection_close;
    cb.http_error = on_http_error;
    cb.exit_thread = on_exit_thread;
    cb.log_message = on_log_message;
    mg_init_library(0);
    if (!(ctx = mg_start(&cb, &srv, options))) {
        LOG_ERR("cannot serve HTTP on %s", cm_cfg.listen);
        goto fail_start;
    }
    LOG_INFO("listening on %s: %d threads, up to %d long-polls", cm_cfg.listen,
             cm_cfg.api_threads, waiters);
    while (sigwait(&sigs, &sig) != 0) {}
    LOG_INFO("%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    api_waits_close(srv.waits); /* long-polls answer now instead of holding mg_stop */
    stop_server(ctx);
    LOG_INFO("stopped");
    rc = 0;
fail_start:
    mg_exit_library();
    q_batcher_free(srv.enq); /* after mg_stop: no request enqueues any more */
fail_batcher:
    api_conns_free(srv.conns); /* after the senders: they write deferred replies */
fail_conns:
    api_gate_flusher_stop(); /* after mg_stop: no request counts any more */
fail_flusher:
    api_waits_free(srv.waits);
fail_waits:
    api_authcache_free(srv.auth);
fail_auth:
    api_cache_free(srv.cache);
fail_cache:
    cm_pg_pool_free(srv.pg);
fail_pg:
    if (rc) LOG_ERR("api could not start");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
