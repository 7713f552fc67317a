/* tests/unit/api/test_conn.c — deferred replies: finding a connection's socket, the
 * hold that orders replies, a reply written by another thread, a peer that does not
 * read. Real TCP connections on 127.0.0.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api/conn.h"
#include "common/util.h"

/* A connected pair: client (ours), server (as accepted), and the request info civetweb
 * would give for it. */
typedef struct pair {
    int listener, client, server;
    struct mg_request_info ri;
} pair_t;

static void pair_open(pair_t *p)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);

    memset(p, 0, sizeof(*p));
    assert_true((p->listener = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
    assert_int_equal(bind(p->listener, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(p->listener, 4), 0);
    assert_int_equal(getsockname(p->listener, (struct sockaddr *)&a, &len), 0);
    p->ri.server_port = ntohs(a.sin_port);
    assert_true((p->client = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
    assert_int_equal(connect(p->client, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_true((p->server = accept(p->listener, NULL, NULL)) >= 0);
    len = sizeof(a);
    assert_int_equal(getsockname(p->client, (struct sockaddr *)&a, &len), 0);
    p->ri.remote_port = ntohs(a.sin_port);
    inet_ntop(AF_INET, &a.sin_addr, p->ri.remote_addr, sizeof(p->ri.remote_addr));
}

static void pair_close(pair_t *p)
{
    close(p->client);
    close(p->server);
    close(p->listener);
}

static void test_find_socket(void **state)
{
    (void)state;
    pair_t p, q;
    pair_open(&p);
    pair_open(&q);
    assert_int_equal(api_conn_find_socket(p.ri.remote_addr, p.ri.remote_port, p.ri.server_port),
                     p.server);
    assert_int_equal(api_conn_find_socket(q.ri.remote_addr, q.ri.remote_port, q.ri.server_port),
                     q.server);
    /* the client end has the peer port swapped: not it; a wrong port or address: none */
    assert_int_equal(api_conn_find_socket(p.ri.remote_addr, p.ri.server_port, p.ri.remote_port),
                     p.client);
    assert_int_equal(api_conn_find_socket(p.ri.remote_addr, p.ri.remote_port, q.ri.server_port),
                     -1);
    assert_int_equal(api_conn_find_socket("127.0.0.2", p.ri.remote_port, p.ri.server_port), -1);
    assert_int_equal(api_conn_find_socket("not an address", p.ri.remote_port, p.ri.server_port),
                     -1);
    pair_close(&p);
    pair_close(&q);
}

struct later {
    api_conn_t *c;
    const char *text;
    int delay_ms, rc;
    atomic_int written;
};

static void *write_later(void *arg)
{
    struct later *l = arg;
    struct timespec pause = {0, (long)l->delay_ms * 1000000L};
    nanosleep(&pause, NULL);
    atomic_store(&l->written, 1);
    l->rc = api_conn_write(l->c, l->text, strlen(l->text));
    return NULL;
}

/* A held connection: settle waits until the other thread wrote; the bytes arrive. */
static void test_hold_settle_write(void **state)
{
    (void)state;
    api_conns_t *cs = api_conns_new(1);
    pair_t p;
    pthread_t t;
    char buf[64];

    assert_non_null(cs);
    api_conn_thread_start(cs);
    api_conn_t *c = api_conn_self();
    assert_non_null(c);
    pair_open(&p);
    api_conn_opened(c);
    for (int round = 0; round < 3; round++) { /* the slot serves one reply after another */
        struct later l = {.c = c, .text = round == 1 ? "second" : "first/third",
                          .delay_ms = 100};
        assert_int_equal(api_conn_hold(c, &p.ri), 0);
        assert_int_equal(pthread_create(&t, NULL, write_later, &l), 0);
        api_conn_settle(c); /* returns only once written */
        assert_int_equal(atomic_load(&l.written), 1);
        ssize_t n = recv(p.client, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        assert_int_equal(n, (ssize_t)strlen(l.text));
        buf[n] = '\0';
        assert_string_equal(buf, l.text);
        pthread_join(t, NULL);
        assert_int_equal(l.rc, 0);
    }
    api_conn_settle(c); /* nothing held: returns at once */
    pair_close(&p);
    api_conns_free(cs);
}

/* No slot left for a second thread; TLS and an unknown socket are answered as usual. */
static void *start_second(void *arg)
{
    api_conn_thread_start(arg);
    return api_conn_self();
}

static void test_no_hold(void **state)
{
    (void)state;
    api_conns_t *cs = api_conns_new(1);
    pthread_t t;
    void *other;
    pair_t p;

    assert_non_null(cs);
    api_conn_thread_start(cs);
    assert_int_equal(pthread_create(&t, NULL, start_second, cs), 0);
    pthread_join(t, &other);
    assert_null(other);
    assert_int_equal(api_conn_hold(NULL, NULL), -1);
    pair_open(&p);
    api_conn_opened(api_conn_self());
    p.ri.is_ssl = 1;
    assert_int_equal(api_conn_hold(api_conn_self(), &p.ri), -1);
    p.ri.is_ssl = 0;
    p.ri.remote_port = p.ri.server_port; /* no such connection */
    assert_int_equal(api_conn_hold(api_conn_self(), &p.ri), -1);
    pair_close(&p);
    api_conns_free(cs);
}

/* A peer that never reads: the write gives up once nothing is taken for
 * API_CONN_WRITE_MS and shuts the connection down (the peer then reads an end). */
static void test_peer_not_reading(void **state)
{
    (void)state;
    api_conns_t *cs = api_conns_new(1);
    pair_t p;
    int small = 4096;
    size_t len = 8 << 20; /* far more than both socket buffers */
    char *big = malloc(len);

    assert_non_null(cs);
    assert_non_null(big);
    memset(big, 'x', len);
    api_conn_thread_start(cs);
    api_conn_t *c = api_conn_self();
    pair_open(&p);
    setsockopt(p.server, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(p.client, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    api_conn_opened(c);
    assert_int_equal(api_conn_hold(c, &p.ri), 0);
    int64_t t0 = cm_mono_ms();
    assert_int_equal(api_conn_write(c, big, len), -1);
    assert_true(cm_mono_ms() - t0 >= API_CONN_WRITE_MS);
    api_conn_settle(c); /* released all the same */
    /* the peer reads what was taken, then the end */
    char buf[65536];
    size_t got = 0;
    ssize_t n;
    while ((n = recv(p.client, buf, sizeof(buf), 0)) > 0) got += (size_t)n;
    assert_true(n == 0 || n == -1);
    assert_true(got > 0 && got < len);
    pair_close(&p);
    api_conns_free(cs);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_socket),
        cmocka_unit_test(test_hold_settle_write),
        cmocka_unit_test(test_no_hold),
        cmocka_unit_test(test_peer_not_reading),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
