/* scheduler/archive.h — copies terminal jobs from Redis to the PostgreSQL `jobs` table.
 *
 * One batch: read the "done" set (q_done_batch), upsert the rows with multi-row
 * INSERT ... ON CONFLICT (id) DO UPDATE statements (one per 16 MiB of job data), and only
 * once they committed let the jobs expire from Redis (q_mark_archived). Values from Redis are
 * checked first so that one damaged record cannot block the archive: text that is not UTF-8 and
 * JSON that does not parse are replaced (and logged), missing type/queue/owner become "unknown",
 * numbers are clamped to their columns, times outside years 1970-9999 become NULL. */
#ifndef SCH_ARCHIVE_H
#define SCH_ARCHIVE_H

#include <libpq-fe.h>
#include <stdint.h>

#include "queue/queue.h"

#define SCH_EPG (-100)     /* PostgreSQL unreachable or the statement failed */
#define SCH_UPSERT_COLS 22 /* values per row */
#define SCH_UPSERT_ROWS_MAX (65535 / SCH_UPSERT_COLS) /* libpq's parameter limit */

/* The error stored when a job's error in Redis is not valid JSON. */
#define SCH_CORRUPT_ERROR                                                                          \
    "{\"code\":\"INTERNAL_ERROR\",\"message\":\"the error recorded in Redis was unreadable\","     \
    "\"retryable\":false}"

/* One upsert statement and its parameters (caller-allocated; sch_upsert_clear). */
typedef struct sch_upsert {
    char *sql;           /* "INSERT INTO jobs (...) VALUES ($1,...),(...) ON CONFLICT ..." */
    int nparams;         /* rows * SCH_UPSERT_COLS */
    const char **values; /* text of each parameter, NULL for SQL NULL; they borrow the
                          * jobs' strings, so the jobs must outlive the upsert */
    char *owned;         /* formatted numbers and times that values point into */
} sch_upsert_t;

/* 1 if job can go to the archive: a valid id and a terminal status. */
int sch_archivable(const q_job_t *job);

/* Builds the upsert of jobs[0..n-1] (each archivable; 1 <= n <= SCH_UPSERT_ROWS_MAX);
 * now_ms stands in for a missing creation time. Returns 0, Q_EINVAL or Q_ENOMEM (u is
 * then empty). */
int sch_upsert_build(sch_upsert_t *u, q_job_t *const *jobs, int n, int64_t now_ms);

/* Frees what u owns and zeroes it. */
void sch_upsert_clear(sch_upsert_t *u);

/* Archives one batch of at most limit jobs over q and pg (both borrowed). Jobs that
 * could not be written stay in the "done" set for the next call. Returns the number of
 * jobs written, or Q_EREDIS, Q_ENOMEM, or SCH_EPG (logged) when PostgreSQL failed or
 * refused a row (the rows it took in the meantime are marked archived all the same);
 * check PQstatus(pg) for a lost connection. */
int sch_archive(q_conn_t *q, PGconn *pg, int limit, int64_t retention_ms,
                int64_t dead_retention_ms);

#endif
