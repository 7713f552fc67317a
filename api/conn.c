/* api/conn.c — deferred replies: request thread slots, socket lookup, ordered writes. */
#include "api/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "common/util.h"

#define FD_SCAN_MAX 65536 /* descriptors looked at to find a connection's socket */

enum { FD_UNKNOWN = -1, FD_NONE = -2 };

struct api_conn {
    int fd;             /* the connection's socket; FD_UNKNOWN, FD_NONE (answer as usual) */
    atomic_int busy;    /* a deferred reply is not written yet */
    atomic_int waiting; /* the request thread waits for it (api_conn_settle) */
    sem_t idle;         /* posted when busy ends while waiting */
};

struct api_conns {
    int n;
    atomic_int used;
    struct api_conn *slot;
};

static _Thread_local api_conn_t *tl_conn;

api_conns_t *api_conns_new(int n)
{
    api_conns_t *cs = calloc(1, sizeof(*cs));
    if (!cs || !(cs->slot = calloc((size_t)n, sizeof(*cs->slot)))) {
        free(cs);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (sem_init(&cs->slot[i].idle, 0, 0) != 0) {
            cs->n = i;
            api_conns_free(cs);
            return NULL;
        }
        cs->slot[i].fd = FD_NONE;
    }
    cs->n = n;
    return cs;
}

void api_conns_free(api_conns_t *cs)
{
    if (!cs) return;
    for (int i = 0; i < cs->n; i++) sem_destroy(&cs->slot[i].idle);
    free(cs->slot);
    free(cs);
}

void api_conn_thread_start(api_conns_t *cs)
{
    int i = atomic_fetch_add(&cs->used, 1);
    tl_conn = i < cs->n ? &cs->slot[i] : NULL;
}

api_conn_t *api_conn_self(void) { return tl_conn; }

void api_conn_opened(api_conn_t *c)
{
    if (c) c->fd = FD_UNKNOWN;
}

void api_conn_settle(api_conn_t *c)
{
    if (!c || !atomic_load(&c->busy)) return;
    atomic_store(&c->waiting, 1);
    /* a post left from an earlier wait only makes this loop turn once more */
    while (atomic_load(&c->busy))
        while (sem_wait(&c->idle) != 0 && errno == EINTR) {}
    atomic_store(&c->waiting, 0);
}

/* Ends the hold. The slot outlives the connection, so posting after the request thread
 * went on is harmless. */
static void release(api_conn_t *c)
{
    atomic_store(&c->busy, 0);
    if (atomic_load(&c->waiting)) sem_post(&c->idle);
}

/* The address and port of sa, for comparison; 0, or -1 if not IPv4/IPv6. */
static int addr_of(const struct sockaddr_storage *sa, int *family, unsigned char addr[16],
                   int *port)
{
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
        memcpy(addr, &s->sin_addr, 4);
        *port = ntohs(s->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
        memcpy(addr, &s->sin6_addr, 16);
        *port = ntohs(s->sin6_port);
    } else {
        return -1;
    }
    *family = sa->ss_family;
    return 0;
}

/* 0 if fd is a TCP socket from the peer (family, want, remote_port) to local port
 * server_port. */
static int is_connection(int fd, int family, const unsigned char *want, int remote_port,
                         int server_port)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof(sa);
    unsigned char got[16];
    int fam, port, type;
    socklen_t tlen = sizeof(type);

    if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0 ||
        addr_of(&sa, &fam, got, &port) != 0 || fam != family || port != remote_port ||
        memcmp(got, want, family == AF_INET ? 4 : 16) != 0)
        return -1;
    len = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 ||
        addr_of(&sa, &fam, got, &port) != 0 || port != server_port)
        return -1;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_STREAM) return -1;
    return 0;
}

int api_conn_find_socket(const char *remote_addr, int remote_port, int server_port)
{
    static atomic_int last = 0; /* where the last one was found */
    unsigned char want[16];
    int family, max = FD_SCAN_MAX, hint = atomic_load(&last);
    struct rlimit rl;

    memset(want, 0, sizeof(want));
    if (inet_pton(AF_INET, remote_addr, want) == 1) family = AF_INET;
    else if (inet_pton(AF_INET6, remote_addr, want) == 1) family = AF_INET6;
    else return -1;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)max) max = (int)rl.rlim_cur;
    if (hint >= max) hint = 0;
    /* A TCP peer address and port with our listening port as the local one name one
     * connection, the one civetweb accepted (nothing else of ours is connected from that
     * peer to that port). Descriptors are handed out lowest first, and connections come
     * and go together: the search starts where the last one was found and widens. */
    for (int d = 0; hint - d >= 0 || hint + d < max; d++) {
        int up = hint + d, down = hint - d;
        if (up < max && is_connection(up, family, want, remote_port, server_port) == 0) {
            atomic_store(&last, up);
            return up;
        }
        if (d > 0 && down >= 0 &&
            is_connection(down, family, want, remote_port, server_port) == 0) {
            atomic_store(&last, down);
            return down;
        }
    }
    return -1;
}

int api_conn_hold(api_conn_t *c, const struct mg_request_info *ri)
{
    if (!c || ri->is_ssl) return -1;
    if (c->fd == FD_UNKNOWN) {
        int fd = api_conn_find_socket(ri->remote_addr, ri->remote_port, ri->server_port);
        c->fd = fd >= 0 ? fd : FD_NONE;
    }
    if (c->fd < 0) return -1;
    atomic_store(&c->busy, 1);
    return 0;
}

int api_conn_write(api_conn_t *c, const char *buf, size_t len)
{
    int64_t deadline = cm_mono_ms() + API_CONN_WRITE_MS;
    int rc = 0;

    while (len > 0) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            deadline = cm_mono_ms() + API_CONN_WRITE_MS;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int64_t left = deadline - cm_mono_ms();
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            if (left > 0 && (poll(&p, 1, (int)left) >= 0 || errno == EINTR)) continue;
        }
        /* gone, or not reading: civetweb's thread sees the end and closes the socket */
        shutdown(c->fd, SHUT_RDWR);
        rc = -1;
        break;
    }
    release(c);
    return rc;
}
