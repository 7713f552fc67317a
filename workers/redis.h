/* workers/redis.h — one Redis connection on a libuv loop, with timeouts and reconnects.
 *
 * Wraps a hiredis redisAsyncContext driven by hiredis's libuv adapter. hiredis 0.14 has
 * no timeouts of its own, so this adds a connect timeout, a timeout per command and, after
 * any failure, reconnection with capped exponential backoff. Host names are resolved
 * with uv_getaddrinfo, never on the loop's thread.
 *
 * Commands are accepted only while connected (wk_redis_connected). Every accepted command
 * gets exactly one callback: with its reply, or with NULL when the connection timed out,
 * dropped or was closed (the reply is borrowed: hiredis frees it when the callback
 * returns). One channel may be subscribed; the subscription is renewed on each connect.
 *
 * Callbacks may send commands; they must not free the connection they are called for. */
#ifndef WK_REDIS_H
#define WK_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <uv.h>

typedef struct wk_redis wk_redis_t;

/* A command's answer; reply is NULL when none came (timeout, disconnect, close). */
typedef void (*wk_redis_reply_fn)(wk_redis_t *r, redisReply *reply, void *data);
/* A message published on the subscribed channel (payload borrowed). */
typedef void (*wk_redis_message_fn)(wk_redis_t *r, const char *payload, size_t len,
                                    void *data);
/* The connection is established (first time or again). */
typedef void (*wk_redis_up_fn)(wk_redis_t *r, void *data);

/* Creates a connection and starts connecting to host:port. name labels log lines;
 * timeout_ms bounds name resolution + connect and the confirmation of a subscription.
 * on_up (may be NULL) and the other callbacks receive data. Returns NULL on OOM. */
wk_redis_t *wk_redis_new(uv_loop_t *loop, const char *name, const char *host, int port,
                         int timeout_ms, wk_redis_up_fn on_up, void *data);

/* Closes the connection: pending commands are called back with NULL (now, or when the
 * hiredis callback running at the moment returns); memory goes once the loop has closed
 * the timer. NULL is a no-op. */
void wk_redis_free(wk_redis_t *r);

/* 1 if commands are accepted now. */
int wk_redis_connected(const wk_redis_t *r);

/* Sends a command (argv/argvlen borrowed: hiredis copies them at once). fn is called
 * exactly once, with NULL if no reply came within timeout_ms (the connection is then
 * dropped and re-established). Returns 0, or -1 when not connected or out of memory
 * (fn is then not called). */
int wk_redis_command(wk_redis_t *r, int argc, const char **argv, const size_t *argvlen,
                     int timeout_ms, wk_redis_reply_fn fn, void *data);

/* Writes the commands sent so far to the socket now rather than when the loop next
 * polls (what the socket does not take goes as usual; a write error surfaces then).
 * Lets Redis start on them while the caller goes on with replies already read. */
void wk_redis_flush(wk_redis_t *r);

/* Subscribes to channel (copied) now if connected and after every reconnect; fn gets each
 * message. Call once. Returns 0 or -1 (OOM). */
int wk_redis_subscribe(wk_redis_t *r, const char *channel, wk_redis_message_fn fn);

#endif
