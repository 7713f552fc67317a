/* common/pg.h — PostgreSQL connections: a bounded, thread-safe pool.
 *
 * Every connection is opened with the configured schema as search_path and the
 * configured statement_timeout. A connection found broken is reopened on acquire. */
#ifndef CM_PG_H
#define CM_PG_H

#include <libpq-fe.h>

typedef struct cm_pg_pool cm_pg_pool_t;

/* Opens one connection with cm_cfg's database_url, schema and statement timeout.
 * Returns NULL (and logs why) if it cannot connect. Caller owns it: PQfinish. */
PGconn *cm_pg_connect(void);

/* Creates a pool of at most size connections, opened lazily. Returns NULL on OOM. */
cm_pg_pool_t *cm_pg_pool_new(int size);

/* Closes every connection and frees the pool. NULL is a no-op. */
void cm_pg_pool_free(cm_pg_pool_t *pool);

/* Borrows a connection, waiting up to timeout_ms for one to be free. Returns NULL on
 * timeout or when PostgreSQL is unreachable. Give it back with cm_pg_release. */
PGconn *cm_pg_acquire(cm_pg_pool_t *pool, int timeout_ms);

/* Returns a borrowed connection; a connection in a bad state is closed. */
void cm_pg_release(cm_pg_pool_t *pool, PGconn *conn);

/* 1 if a connection can be had and answers SELECT 1, else 0. */
int cm_pg_ping(cm_pg_pool_t *pool);

#endif
