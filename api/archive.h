/* api/archive.h — reads of the PostgreSQL job archive (`jobs`, sql/001_jobs.sql) as
 * q_job_t snapshots, so that archived and hot jobs have one JSON shape. */
#ifndef API_ARCHIVE_H
#define API_ARCHIVE_H

#include <stdint.h>

#include "common/pg.h"
#include "queue/queue.h"

enum {
    API_ARCH_ENOTFOUND = -1, /* no such job */
    API_ARCH_EDB = -2,       /* PostgreSQL unreachable or the query failed (logged) */
};

/* Reads job id. Returns 0 with *out (caller frees with q_job_free), API_ARCH_ENOTFOUND
 * or API_ARCH_EDB. */
int api_archive_get(cm_pg_pool_t *pg, const char *id, q_job_t **out);

/* Reads up to max jobs of owner, newest first (created, then id, descending), strictly
 * after (before_ms, before_id) when before_id is not NULL, with status and type when not
 * NULL. Returns the count with *out (malloc'd array; free each job and the array), or
 * API_ARCH_EDB. */
int api_archive_list(cm_pg_pool_t *pg, const char *owner, int64_t before_ms,
                     const char *before_id, const char *status, const char *type, int max,
                     q_job_t ***out);

#endif
