/* api/conn.h — replies written after their handler returned (deferred replies).
 *
 * civetweb serves a keep-alive connection on one request thread, which answers one
 * request before it reads the next. A POST /v1/jobs waits for Redis: rather than put
 * its thread to sleep until an enqueue sender has the answer and wake it to write the
 * reply (two more context switches per request, the largest cost of a POST on a small
 * VM), the handler hands the job over and returns, and the sender writes the reply
 * straight to the connection's socket. The thread goes back to reading the connection,
 * as after any reply.
 *
 * Order and lifetime: a connection's next request, and its close, wait until its
 * deferred reply is written (api_conn_settle, called by server.c), so replies keep
 * their order when a client pipelines, and no socket is written after civetweb closed
 * it. A reply the socket takes nothing of for API_CONN_WRITE_MS (the client does not
 * read) ends the connection, as civetweb's own write timeout would; replies are small
 * (api/jobs.c defers only those), so this needs a client that pipelines requests and
 * leaves a socket buffer's worth of replies unread. TLS connections,
 * and sockets that cannot be found, are answered the usual way.
 *
 * Each request thread has a slot, made when the thread starts and kept until the
 * server is freed, so that a sender may touch it after the thread has moved on. */
#ifndef API_CONN_H
#define API_CONN_H

#include <civetweb.h>
#include <stddef.h>

#define API_CONN_WRITE_MS 1000

typedef struct api_conns api_conns_t;
typedef struct api_conn api_conn_t;

/* Slots for n request threads. NULL on failure. */
api_conns_t *api_conns_new(int n);

/* Frees the slots: after mg_stop and after every sender has stopped. NULL is a no-op. */
void api_conns_free(api_conns_t *cs);

/* Gives the calling request thread a slot (in civetweb's init_thread). */
void api_conn_thread_start(api_conns_t *cs);

/* The calling request thread's slot, or NULL (none left, or not a request thread). */
api_conn_t *api_conn_self(void);

/* A new connection on this thread's slot (its socket is looked up when first needed). */
void api_conn_opened(api_conn_t *c);

/* Waits until the connection has no deferred reply unwritten. NULL is a no-op. */
void api_conn_settle(api_conn_t *c);

/* Marks a reply of the request ri on c as deferred: 0, and the connection is held
 * until api_conn_write; -1 when it cannot be (no socket found, TLS): answer as usual. */
int api_conn_hold(api_conn_t *c, const struct mg_request_info *ri);

/* Writes the deferred reply (len bytes) from any thread, then releases the
 * connection. Returns 0, or -1 when it could not be written whole (gone, or nothing
 * taken for API_CONN_WRITE_MS: the connection is then shut down). */
int api_conn_write(api_conn_t *c, const char *buf, size_t len);

/* The socket of the TCP connection from remote_addr:remote_port to local port
 * server_port, looked up among this process's descriptors; -1 if none. */
int api_conn_find_socket(const char *remote_addr, int remote_port, int server_port);

#endif
