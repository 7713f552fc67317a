/* tests/bench/bare.c — the reference HTTP server for `make bench`: civetweb with one
 * handler that reads the request body and answers 200 with a small JSON body.
 *
 *   bare PORT THREADS      listens on 127.0.0.1:PORT until SIGTERM/SIGINT
 *
 * Same civetweb options the bench asks of `conveyor api`: keep-alive, tcp_nodelay=1 and
 * THREADS request threads. Built by ops/bench.sh: cc -O2 -o bare bare.c -lcivetweb. */
#define _POSIX_C_SOURCE 200809L
#include <civetweb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* Drains the body (so the connection stays usable) and answers 200 + JSON. */
static int on_request(struct mg_connection *conn, void *data)
{
    static const char body[] = "{\"id\":\"job_0000000000000000000000\",\"status\":\"queued\"}";
    char buf[4096];
    (void)data;
    while (mg_read(conn, buf, sizeof(buf)) > 0) {
    }
    mg_printf(conn,
              "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              "Content-Length: %zu\r\n\r\n%s",
              sizeof(body) - 1, body);
    return 200;
}

int main(int argc, char **argv)
{
    char ports[64];
    if (argc != 3 || atoi(argv[1]) <= 0 || atoi(argv[2]) <= 0) {
        fprintf(stderr, "usage: %s PORT THREADS\n", argv[0]);
        return 2;
    }
    snprintf(ports, sizeof(ports), "127.0.0.1:%s", argv[1]);
    const char *options[] = {"listening_ports", ports,      "num_threads", argv[2],
                             "enable_keep_alive", "yes",    "tcp_nodelay", "1",
                             "keep_alive_timeout_ms", "30000", NULL};
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    mg_init_library(0);
    struct mg_callbacks cb = {0};
    struct mg_context *ctx = mg_start(&cb, NULL, options);
    if (!ctx) {
        fprintf(stderr, "bare: cannot listen on %s\n", ports);
        return 1;
    }
    mg_set_request_handler(ctx, "/", on_request, NULL);
    while (!stopping) sleep(1); /* interrupted by the signal */
    mg_stop(ctx);
    mg_exit_library();
    return 0;
}
