/* scheduler/cron.c — the table of periodic duties and their timers. */
#include "scheduler/cron.h"

#include <stdlib.h>

#include "common/config.h"
#include "common/log.h"

/* Drops owner-index and dead-set entries of jobs that expired from Redis (older than
 * the retention: younger entries' jobs cannot have expired yet). */
static int sweep(const sch_ctx_t *ctx)
{
    return q_sweep(ctx->q, ctx->now_ms - (int64_t)cm_cfg.retention_seconds * 1000);
}

/* One duty: run returns how many things it did (logged when > 0), or a negative code. */
struct duty {
    const char *name; /* also its lock: P leader:<name> */
    int interval_ms;
    int (*run)(const sch_ctx_t *ctx);
};

static const struct duty duties[] = {
    {"sweep", 60000, sweep},
};

#define NDUTIES ((int)(sizeof(duties) / sizeof(duties[0])))

struct sch_cron {
    int64_t next[NDUTIES]; /* monotonic ms at which each duty is due */
};

sch_cron_t *sch_cron_new(void)
{
    return calloc(1, sizeof(sch_cron_t));
}

void sch_cron_free(sch_cron_t *cr)
{
    free(cr);
}

int sch_cron_due(const sch_cron_t *cr, int64_t mono_ms)
{
    for (int i = 0; i < NDUTIES; i++)
        if (mono_ms >= cr->next[i]) return 1;
    return 0;
}

int sch_cron_run(sch_cron_t *cr, const sch_ctx_t *ctx, int64_t mono_ms)
{
    for (int i = 0; i < NDUTIES; i++) {
        const struct duty *d = &duties[i];
        int rc;

        if (mono_ms < cr->next[i]) continue;
        rc = q_leader(ctx->q, d->name, ctx->instance, d->interval_ms);
        if (rc < 0) return rc;
        cr->next[i] = mono_ms + d->interval_ms;
        if (rc == 0) continue; /* another scheduler has it this time */
        rc = d->run(ctx);
        if (rc > 0)
            LOG_INFO("%s: %d done", d->name, rc);
        else if (rc < 0)
            LOG_WARN("%s failed: %s", d->name, q_strerror(rc));
        else
            LOG_DEBUG("%s: nothing to do", d->name);
    }
    return 0;
}
