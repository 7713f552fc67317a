/* scheduler/cron.h — periodic duties of the scheduler (retention sweep, later rollups).
 *
 * cron.c holds one table of duties {name, interval, function}; add a row to add one.
 * Every scheduler process keeps the table's timers, and a duty runs where its own lock
 * (q_leader with the duty's name, held for one interval) is taken, so one scheduler of
 * the cluster runs it about once per interval. A duty must be safe to run again (a lock
 * that lapses during a long run lets another scheduler start it too). */
#ifndef SCH_CRON_H
#define SCH_CRON_H

#include <libpq-fe.h>
#include <stdint.h>

#include "queue/queue.h"

/* What a duty may use; everything is borrowed for the duration of the call. */
typedef struct sch_ctx {
    q_conn_t *q;
    PGconn *pg;           /* NULL while PostgreSQL is unreachable */
    const char *instance; /* this scheduler's id, the candidate for duty locks */
    int64_t now_ms;       /* wall clock at the start of the tick */
} sch_ctx_t;

typedef struct sch_cron sch_cron_t;

/* A fresh set of timers: every duty is due at once. NULL on OOM; free with
 * sch_cron_free. */
sch_cron_t *sch_cron_new(void);
void sch_cron_free(sch_cron_t *cr);

/* 1 if a duty is due at mono_ms (the monotonic clock, cm_mono_ms). */
int sch_cron_due(const sch_cron_t *cr, int64_t mono_ms);

/* Runs the duties due at mono_ms whose lock this instance gets, logging what they did.
 * A duty whose lock could not be asked for (Redis down) stays due. Returns 0, or
 * Q_EREDIS if Redis failed. */
int sch_cron_run(sch_cron_t *cr, const sch_ctx_t *ctx, int64_t mono_ms);

#endif
