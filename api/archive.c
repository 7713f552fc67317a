/* api/archive.c — job archive reads. */
#include "api/archive.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define ACQUIRE_MS 2000 /* longest wait for a pooled connection */

/* Every column a q_job_t needs, times as ms since the epoch. ids compare bytewise
 * (COLLATE "C") as in Redis, so listings merge in one order; the created_at range is
 * written apart so that the (owner, created_at) index serves it in order. */
#define COLUMNS                                                                          \
    "id, type, queue, owner, status, attempt, max_attempts, priority, timeout_ms, "     \
    "input::text, result::text, error::text, history::text, progress, progress_message, " \
    "idempotency_key, (extract(epoch from run_at) * 1000)::bigint, "                     \
    "(extract(epoch from created_at) * 1000)::bigint, "                                  \
    "(extract(epoch from started_at) * 1000)::bigint, "                                  \
    "(extract(epoch from finished_at) * 1000)::bigint, "                                 \
    "(extract(epoch from updated_at) * 1000)::bigint, cancel_requested"

/* Copies column col of row, NULL for SQL NULL. Returns 0 or -1 (out of memory). */
static int text(const PGresult *res, int row, int col, char **out)
{
    *out = NULL;
    if (PQgetisnull(res, row, col)) return 0;
    return (*out = strdup(PQgetvalue(res, row, col))) ? 0 : -1;
}

static long long num(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* Builds a snapshot from a row of COLUMNS. Returns it, or NULL when out of memory. */
static q_job_t *row_job(const PGresult *res, int row)
{
    q_job_t *j = calloc(1, sizeof(*j));
    if (!j) return NULL;
    snprintf(j->id, sizeof(j->id), "%s", PQgetvalue(res, row, 0));
    if (text(res, row, 1, &j->type) || text(res, row, 2, &j->queue) ||
        text(res, row, 3, &j->owner) || text(res, row, 4, &j->status) ||
        text(res, row, 9, &j->input) || text(res, row, 10, &j->result) ||
        text(res, row, 11, &j->error) || text(res, row, 12, &j->history) ||
        text(res, row, 14, &j->progress_message) || text(res, row, 15, &j->idempotency_key)) {
        q_job_free(j);
        return NULL;
    }
    j->attempt = (int)num(res, row, 5);
    j->max_attempts = (int)num(res, row, 6);
    j->priority = (int)num(res, row, 7);
    j->timeout_ms = (int)num(res, row, 8);
    j->progress = (int)num(res, row, 13);
    j->run_at_ms = num(res, row, 16);
    j->created_ms = num(res, row, 17);
    j->started_ms = num(res, row, 18);
    j->finished_ms = num(res, row, 19);
    j->updated_ms = num(res, row, 20);
    j->cancel_requested = PQgetvalue(res, row, 21)[0] == 't';
    return j;
}

/* Runs a parameterized query on a pooled connection. Returns the result (caller
 * PQclears) or NULL (logged). */
static PGresult *query(cm_pg_pool_t *pg, const char *sql, int n, const char *const *values)
{
    PGconn *c = cm_pg_acquire(pg, ACQUIRE_MS);
    PGresult *res;
    if (!c) return NULL;
    res = PQexecParams(c, sql, n, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        LOG_ERR("job archive query failed: %s", PQerrorMessage(c));
        PQclear(res);
        res = NULL;
    }
    cm_pg_release(pg, c);
    return res;
}

int api_archive_get(cm_pg_pool_t *pg, const char *id, q_job_t **out)
{
    const char *values[] = {id};
    PGresult *res = query(pg, "SELECT " COLUMNS " FROM jobs WHERE id = $1", 1, values);
    int rc = API_ARCH_ENOTFOUND;

    *out = NULL;
    if (!res) return API_ARCH_EDB;
    if (PQntuples(res) == 1) rc = (*out = row_job(res, 0)) ? 0 : API_ARCH_EDB;
    PQclear(res);
    return rc;
}

int api_archive_list(cm_pg_pool_t *pg, const char *owner, int64_t before_ms,
                     const char *before_id, const char *status, const char *type, int max,
                     q_job_t ***out)
{
    char sql[1024], ms[24], lim[16];
    const char *values[6];
    int n = 0, len, k = 0;
    PGresult *res;
    q_job_t **jobs;

    *out = NULL;
    values[n++] = owner;
    len = snprintf(sql, sizeof(sql), "SELECT " COLUMNS " FROM jobs WHERE owner = $1");
    if (before_id) {
        snprintf(ms, sizeof(ms), "%lld", (long long)before_ms);
        values[n++] = ms;
        values[n++] = before_id;
        len += snprintf(sql + len, sizeof(sql) - (size_t)len,
                        " AND created_at <= timestamptz 'epoch' + $2::bigint * interval '1 ms'"
                        " AND (created_at < timestamptz 'epoch' + $2::bigint * interval '1 ms'"
                        " OR id COLLATE \"C\" < $3)");
    }
    if (status) {
        values[n++] = status;
        len += snprintf(sql + len, sizeof(sql) - (size_t)len, " AND status = $%d", n);
    }
    if (type) {
        values[n++] = type;
        len += snprintf(sql + len, sizeof(sql) - (size_t)len, " AND type = $%d", n);
    }
    snprintf(lim, sizeof(lim), "%d", max);
    values[n++] = lim;
    snprintf(sql + len, sizeof(sql) - (size_t)len,
             " ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $%d", n);
    if (!(res = query(pg, sql, n, values))) return API_ARCH_EDB;
    jobs = calloc((size_t)PQntuples(res) + 1, sizeof(*jobs));
    for (int i = 0; jobs && i < PQntuples(res); i++) {
        if (!(jobs[k] = row_job(res, i))) break;
        k++;
    }
    if (!jobs || k < PQntuples(res)) {
        for (int i = 0; jobs && i < k; i++) q_job_free(jobs[i]);
        free(jobs);
        PQclear(res);
        LOG_ERR("out of memory reading the job archive");
        return API_ARCH_EDB;
    }
    PQclear(res);
    *out = jobs;
    return k;
}
