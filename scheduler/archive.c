/* scheduler/archive.c — Redis "done" set → PostgreSQL `jobs`. */
#include "scheduler/archive.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

/* The columns of a row, in the order fill_row writes its values. */
static const char *const cols[SCH_UPSERT_COLS] = {
    "id",
    "type",
    "queue",
    "owner",
    "status",
    "attempt",
    "max_attempts",
    "priority",
    "timeout_ms",
    "input",
    "result",
    "error",
    "history",
    "progress",
    "progress_message",
    "idempotency_key",
    "cancel_requested",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
};

#define SLOT 32                  /* bytes for one formatted number or time */
#define SLOTS_PER_ROW 10         /* 5 numbers + 5 times */
#define MS_MAX 253402300800000LL /* 10000-01-01T00:00:00Z */
#define UNKNOWN "unknown"
#define REJECTED 1                /* write_rows: PostgreSQL refused the data */
#define STMT_MAX_BYTES (16 << 20) /* JSON and text per statement (PostgreSQL caps at 1 GB) */

int sch_archivable(const q_job_t *job)
{
    return q_valid_id(job->id) && job->status && q_status_terminal(job->status);
}

/* s if it is NULL or valid UTF-8, else fallback (logged). */
static const char *text_or(const char *id, const char *col, const char *s, const char *fallback)
{
    json_t *v;

    if (!s) return fallback;
    v = json_string(s); /* NULL for text that is not UTF-8 */
    if (!v) {
        LOG_JOB_WARN(id, "archive: %s is not UTF-8 text; replaced", col);
        return fallback;
    }
    json_decref(v);
    return s;
}

/* s if it is NULL or JSON text PostgreSQL's jsonb accepts, else fallback (logged). */
static const char *json_or(const char *id, const char *col, const char *s, const char *fallback)
{
    json_error_t err;
    json_t *v;

    if (!s) return NULL;
    v = json_loads(s, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &err);
    if (!v) {
        LOG_JOB_WARN(id, "archive: %s is not valid JSON (%s); replaced", col, err.text);
        return fallback;
    }
    json_decref(v);
    return s;
}

static const char *num(char *slot, long long v, long long lo, long long hi)
{
    snprintf(slot, SLOT, "%lld", v < lo ? lo : v > hi ? hi : v);
    return slot;
}

static int valid_ms(int64_t ms)
{
    return ms > 0 && ms < MS_MAX;
}

/* The time as RFC 3339 in slot, or NULL when unset or out of range. */
static const char *ts(char *slot, int64_t ms)
{
    if (!valid_ms(ms)) return NULL;
    cm_format_time(ms, slot, SLOT);
    return slot;
}

/* Writes the SCH_UPSERT_COLS values of job j into v, formatting into slots. */
static void fill_row(const char **v, char *slot, const q_job_t *j, int64_t now_ms)
{
    const char *id = j->id;
    int64_t created = valid_ms(j->created_ms)   ? j->created_ms
                      : valid_ms(j->updated_ms) ? j->updated_ms
                                                : now_ms;
    int64_t updated = valid_ms(j->updated_ms) ? j->updated_ms : created;
    int k = 0;

    v[k++] = id;
    v[k++] = text_or(id, "type", j->type, UNKNOWN);
    v[k++] = text_or(id, "queue", j->queue, UNKNOWN);
    v[k++] = text_or(id, "owner", j->owner, UNKNOWN);
    v[k++] = j->status;
    v[k++] = num(slot + 0 * SLOT, j->attempt, 0, INT32_MAX);
    v[k++] = num(slot + 1 * SLOT, j->max_attempts, 0, INT32_MAX);
    v[k++] = num(slot + 2 * SLOT, j->priority, Q_PRIORITY_MIN, Q_PRIORITY_MAX);
    v[k++] = num(slot + 3 * SLOT, j->timeout_ms, 0, INT32_MAX);
    v[k++] = json_or(id, "input", j->input, NULL);
    v[k++] = json_or(id, "result", j->result, NULL);
    v[k++] = json_or(id, "error", j->error, SCH_CORRUPT_ERROR);
    v[k++] = json_or(id, "history", j->history, NULL);
    v[k++] = num(slot + 4 * SLOT, j->progress, 0, 100);
    v[k++] = text_or(id, "progress_message", j->progress_message, NULL);
    v[k++] = text_or(id, "idempotency_key", j->idempotency_key, NULL);
    v[k++] = j->cancel_requested ? "true" : "false";
    v[k++] = ts(slot + 5 * SLOT, j->run_at_ms);
    v[k++] = ts(slot + 6 * SLOT, created);
    v[k++] = ts(slot + 7 * SLOT, j->started_ms);
    v[k++] = ts(slot + 8 * SLOT, j->finished_ms);
    v[k++] = ts(slot + 9 * SLOT, updated);
}

int sch_upsert_build(sch_upsert_t *u, q_job_t *const *jobs, int n, int64_t now_ms)
{
    size_t sqllen;
    FILE *f = NULL;

    memset(u, 0, sizeof(*u));
    if (n < 1 || n > SCH_UPSERT_ROWS_MAX) return Q_EINVAL;
    u->values = malloc((size_t)n * SCH_UPSERT_COLS * sizeof(*u->values));
    u->owned = malloc((size_t)n * SLOTS_PER_ROW * SLOT);
    if (!u->values || !u->owned || !(f = open_memstream(&u->sql, &sqllen))) goto fail_oom;
    fputs("INSERT INTO jobs (", f);
    for (int c = 0; c < SCH_UPSERT_COLS; c++)
        fprintf(f, "%s%s", c ? ", " : "", cols[c]);
    fputs(") VALUES ", f);
    for (int r = 0; r < n; r++) {
        fill_row(u->values + r * SCH_UPSERT_COLS, u->owned + r * SLOTS_PER_ROW * SLOT, jobs[r],
                 now_ms);
        for (int c = 0; c < SCH_UPSERT_COLS; c++)
            fprintf(f, "%s$%d", c ? "," : r ? ",(" : "(", r * SCH_UPSERT_COLS + c + 1);
        fputc(')', f);
    }
    fputs(" ON CONFLICT (id) DO UPDATE SET ", f);
    for (int c = 1; c < SCH_UPSERT_COLS; c++)
        fprintf(f, "%s = EXCLUDED.%s, ", cols[c], cols[c]);
    /* a snapshot older than the row (a stalled scheduler's, after another archived the
     * job's later state) changes nothing */
    fputs("archived_at = now() WHERE jobs.updated_at <= EXCLUDED.updated_at", f);
    if (fclose(f) != 0) goto fail_oom; /* open_memstream: only fails when out of memory */
    u->nparams = n * SCH_UPSERT_COLS;
    return 0;
fail_oom:
    sch_upsert_clear(u);
    return Q_ENOMEM;
}

void sch_upsert_clear(sch_upsert_t *u)
{
    free(u->sql);
    free(u->values);
    free(u->owned);
    memset(u, 0, sizeof(*u));
}

/* Upserts rows[0..n-1] in one statement. Returns 0, REJECTED when PostgreSQL refused the
 * data (SQLSTATE class 22 or 23: one damaged row fails them all), SCH_EPG or Q_ENOMEM. */
static int write_rows(PGconn *pg, q_job_t *const *rows, int n)
{
    sch_upsert_t u;
    PGresult *r;
    const char *state;
    int rc = sch_upsert_build(&u, rows, n, cm_now_ms());

    if (rc != 0) return rc;
    r = PQexecParams(pg, u.sql, u.nparams, NULL, u.values, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        LOG_ERR("archive of %d job(s) from %s failed: %s", n, rows[0]->id,
                r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
        rc = state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0) ? REJECTED
                                                                                     : SCH_EPG;
    }
    PQclear(r);
    sch_upsert_clear(&u);
    return rc;
}

/* The end of the chunk of rows starting at from: at least one row, then as many as stay
 * under STMT_MAX_BYTES of JSON and text. */
static int chunk_end(q_job_t *const *rows, int from, int n)
{
    size_t total = 0;
    int i = from;

    for (; i < n; i++) {
        const q_job_t *j = rows[i];
        const char *big[] = {j->input, j->result, j->error, j->history, j->progress_message};
        size_t bytes = 0;
        for (size_t k = 0; k < sizeof(big) / sizeof(big[0]); k++)
            if (big[k]) bytes += strlen(big[k]);
        if (i > from && total + bytes > STMT_MAX_BYTES) break;
        total += bytes;
    }
    return i;
}

/* Writes rows[0..n-1] and appends those written to marks (*nmarks). When PostgreSQL
 * refuses the data, the rows are tried one by one to find the damaged ones. Returns 0,
 * REJECTED (some rows were refused), SCH_EPG or Q_ENOMEM. */
static int write_chunk(PGconn *pg, q_job_t *const *rows, int n, q_job_t **marks, int *nmarks)
{
    int rc = write_rows(pg, rows, n);

    if (rc == 0) {
        memcpy(marks + *nmarks, rows, (size_t)n * sizeof(*rows));
        *nmarks += n;
    }
    for (int i = 0; rc == REJECTED && n > 1 && i < n; i++) {
        int w = write_rows(pg, rows + i, 1);
        if (w == 0)
            marks[(*nmarks)++] = rows[i];
        else if (w != REJECTED)
            return w;
    }
    return rc;
}

int sch_archive(q_conn_t *q, PGconn *pg, int limit, int64_t retention_ms, int64_t dead_retention_ms)
{
    q_job_t **jobs = NULL, **rows = NULL, **marks = NULL;
    int n = 0, nrows = 0, nmarks = 0, nskipped, rejected = 0, rc;

    if (limit > SCH_UPSERT_ROWS_MAX) limit = SCH_UPSERT_ROWS_MAX;
    rc = q_done_batch(q, limit, &jobs, &n);
    if (rc != 0 || n == 0) {
        free(jobs); /* the empty array, when there is one */
        return rc;
    }
    rows = malloc((size_t)n * sizeof(*rows));
    marks = malloc((size_t)n * sizeof(*marks));
    if (!rows || !marks) {
        rc = Q_ENOMEM;
        goto out;
    }
    /* Not archivable (left the terminal state, or damaged beyond use): q_mark_archived
     * takes it out of the "done" set without writing it. */
    for (int i = 0; i < n; i++) {
        if (sch_archivable(jobs[i])) {
            rows[nrows++] = jobs[i];
        } else {
            LOG_JOB_WARN(jobs[i]->id, "archive: skipped (status %s)",
                         jobs[i]->status ? jobs[i]->status : "missing");
            marks[nmarks++] = jobs[i];
        }
    }
    nskipped = nmarks;
    for (int at = 0, end; at < nrows && rc == 0; at = end) {
        end = chunk_end(rows, at, nrows);
        rc = write_chunk(pg, rows + at, end - at, marks, &nmarks);
        if (rc == REJECTED) {
            rejected = 1;
            rc = 0;
        }
    }
    /* Refused rows stay in "done"; the caller backs off rather than retry every tick. */
    if (rc == 0 && rejected) rc = SCH_EPG;
    if (nmarks > 0) {
        int m = q_mark_archived(q, marks, nmarks, retention_ms, dead_retention_ms);
        if (m < 0) rc = m;
    }
out:
    for (int i = 0; i < n; i++)
        q_job_free(jobs[i]);
    free(jobs);
    free(rows);
    free(marks);
    return rc < 0 ? rc : nmarks - nskipped;
}
