/* workers/runtime.h — internal to workers/: the job object shared by the runtime
 * (worker.c, which fetches, tracks and acknowledges jobs) and the handler API (job.c,
 * which turns a handler's completion into the Redis command that records it).
 * Handlers include workers/job.h only. */
#ifndef WK_RUNTIME_H
#define WK_RUNTIME_H

#include <stdint.h>
#include <uv.h>

#include "queue/queue.h"
#include "workers/job.h"
#include "workers/registry.h"

typedef struct wk_worker wk_worker_t;

/* Why the runtime asked a running job to stop; the first reason is kept. */
enum wk_stop { WK_STOP_NONE, WK_STOP_USER, WK_STOP_TIMEOUT, WK_STOP_LOST, WK_STOP_SHUTDOWN };

struct wk_job {
    wk_worker_t *w;
    char id[Q_ID_SIZE];
    long long token;       /* fencing token of our lease */
    int attempt;
    int timeout_ms;        /* this attempt's limit */
    int slot;              /* index among the running jobs; -1 once completed */
    int stop;              /* enum wk_stop */
    int lost;              /* our lease was reclaimed: the completion is not recorded */
    int done;              /* the handler completed */
    const char *queue;     /* borrowed from the worker's queue list */
    const wk_type_t *type; /* NULL until the record is known to be usable */
    json_t *input;
    void *data;            /* the handler's */
    uint64_t started;      /* loop time */
    q_argv_t *cmd;         /* finish or release, kept until Redis acknowledges it */
    wk_job_t *next;        /* in the free list or the list waiting for a connection */
    uv_timer_t timer;      /* the attempt's timeout */
};

/* The key prefix with its colon ("cv:"). Borrowed. */
const char *wk_rt_prefix(const wk_worker_t *w);

/* The worker's loop. */
uv_loop_t *wk_rt_loop(wk_worker_t *w);

/* The worker's command connection (NULL once closing). */
wk_redis_t *wk_rt_redis(wk_worker_t *w);

/* The attempt is over: frees its slot and sends cmd (takes it; a finish or a release)
 * until Redis acknowledges it; cmd NULL: nothing to record (lease lost, or out of
 * memory). The runtime then owns and recycles the job. */
void wk_rt_done(wk_job_t *job, q_argv_t *cmd);

/* Sends a progress command (takes cmd; NULL is ignored) and acts on its answer. */
void wk_rt_progress(wk_job_t *job, q_argv_t *cmd);

/* Ends an attempt that the runtime refuses to start (corrupt record, unknown type,
 * invalid input) or that timed out: outcome "dead", "failed" or "retry" (after delay_ms)
 * with the error {code, message, retryable: outcome is "retry"}. */
void wk_job_end(wk_job_t *job, const char *outcome, const char *code, const char *message,
                int64_t delay_ms);

#endif
