/* common/pg.c */
#define _POSIX_C_SOURCE 200809L
#include "common/pg.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "common/log.h"
#include "common/util.h"

struct cm_pg_pool {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    int size, opened; /* opened: connections that exist (idle or borrowed) */
    int nidle;
    PGconn **idle;
};

/* libpq prints server notices on stderr; keep them in the JSON log instead. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    LOG_DEBUG("postgresql: %s", message);
}

PGconn *cm_pg_connect(void)
{
    char options[512];
    /* keepalives and tcp_user_timeout bound a query on a dead network path */
    const char *keys[] = {"dbname", "options", "connect_timeout", "application_name",
                          "keepalives_idle", "keepalives_interval", "keepalives_count",
                          "tcp_user_timeout", NULL};
    const char *vals[] = {cm_cfg.database_url, options, "5", "conveyor", "10", "5", "3",
                          "30000", NULL};
    PGconn *c;

    /* The schema name was checked by cm_config_load to be a plain identifier. */
    snprintf(options, sizeof(options), "-c search_path=%s -c statement_timeout=%d",
             cm_cfg.pg_schema, cm_cfg.pg_statement_timeout_ms);
    c = PQconnectdbParams(keys, vals, 1);
    if (!c) return NULL;
    if (PQstatus(c) != CONNECTION_OK) {
        LOG_WARN("postgresql connection failed: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    return c;
}

cm_pg_pool_t *cm_pg_pool_new(int size)
{
    cm_pg_pool_t *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->idle = calloc((size_t)size, sizeof(PGconn *));
    if (!p->idle) {
        free(p);
        return NULL;
    }
    p->size = size;
    pthread_mutex_init(&p->lock, NULL);
    if (cm_cond_init_monotonic(&p->freed) != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p->idle);
        free(p);
        return NULL;
    }
    return p;
}

void cm_pg_pool_free(cm_pg_pool_t *p)
{
    if (!p) return;
    for (int i = 0; i < p->nidle; i++) PQfinish(p->idle[i]);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->freed);
    free(p->idle);
    free(p);
}

PGconn *cm_pg_acquire(cm_pg_pool_t *p, int timeout_ms)
{
    struct timespec deadline;
    PGconn *c = NULL;

    cm_deadline_ms(&deadline, timeout_ms);
    pthread_mutex_lock(&p->lock);
    while (p->nidle == 0 && p->opened >= p->size) {
        if (pthread_cond_timedwait(&p->freed, &p->lock, &deadline) == ETIMEDOUT) break;
    }
    if (p->nidle > 0) {
        c = p->idle[--p->nidle];
    } else if (p->opened < p->size) {
        p->opened++; /* reserve the slot, connect outside the lock */
    } else {
        pthread_mutex_unlock(&p->lock);
        LOG_WARN("postgresql pool: no connection free within %d ms", timeout_ms);
        return NULL;
    }
    pthread_mutex_unlock(&p->lock);

    if (c && PQstatus(c) != CONNECTION_OK) {
        PQreset(c);
        if (PQstatus(c) != CONNECTION_OK) {
            PQfinish(c); /* its slot stays reserved for the new connection below */
            c = NULL;
        }
    }
    if (!c) {
        c = cm_pg_connect();
        if (!c) {
            pthread_mutex_lock(&p->lock);
            p->opened--;
            pthread_cond_signal(&p->freed);
            pthread_mutex_unlock(&p->lock);
        }
    }
    return c;
}

void cm_pg_release(cm_pg_pool_t *p, PGconn *c)
{
    if (!c) return;
    int bad = PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE;
    pthread_mutex_lock(&p->lock);
    if (bad) {
        PQfinish(c);
        p->opened--;
    } else {
        p->idle[p->nidle++] = c;
    }
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}

int cm_pg_ping(cm_pg_pool_t *p)
{
    PGconn *c = cm_pg_acquire(p, 1000);
    int ok = 0;
    if (!c) return 0;
    PGresult *r = PQexec(c, "SELECT 1");
    ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    cm_pg_release(p, c);
    return ok;
}
