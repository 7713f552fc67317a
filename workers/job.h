/* workers/job.h — what a job handler sees of its job.
 *
 * The runtime creates the job, calls its type's start, and may later call its cancel.
 * The handler ends every attempt with exactly one of wk_job_succeed, wk_job_fail or
 * wk_job_canceled (also after a cancel: completion always comes from the handler);
 * later calls are ignored. After completing, the handler must not touch the job again:
 * the runtime owns it and frees it. Everything runs on the worker's loop thread. */
#ifndef WK_JOB_H
#define WK_JOB_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "workers/redis.h"

typedef struct wk_job wk_job_t;

/* The job id ("job_..."). Borrowed, valid until completion. */
const char *wk_job_id(const wk_job_t *job);

/* The job's input, parsed once and validated by the type's validate. Borrowed. */
const json_t *wk_job_input(const wk_job_t *job);

/* The attempt number, 1 for the first run. */
int wk_job_attempt(const wk_job_t *job);

/* The loop to run the job's I/O on. */
uv_loop_t *wk_job_loop(wk_job_t *job);

/* The worker's command connection, for a handler's own Redis work (a shared rate limit,
 * a catalog read), and the key prefix with its colon ("cv:"). Borrowed; the connection
 * may be down (wk_redis_command then returns -1). */
wk_redis_t *wk_job_redis(wk_job_t *job);
const char *wk_job_prefix(const wk_job_t *job);

/* The handler's own state (NULL until set). The runtime never frees it. */
void *wk_job_data(const wk_job_t *job);
void wk_job_set_data(wk_job_t *job, void *data);

/* Ends the attempt successfully with result (takes the reference; NULL is JSON null). */
void wk_job_succeed(wk_job_t *job, json_t *result);

/* Ends the attempt with an error (code and message borrowed). A retryable failure is
 * retried while attempts remain, after retry_after_ms, or after the type's backoff when
 * retry_after_ms is -1; a non-retryable one ends the job as failed. */
void wk_job_fail(wk_job_t *job, const char *code, const char *message, int retryable,
                 int64_t retry_after_ms);

/* Ends the attempt because the handler stopped on request (after cancel). */
void wk_job_canceled(wk_job_t *job);

/* Records progress (percent 0-100, message borrowed, may be NULL); fire and forget. */
void wk_job_progress(wk_job_t *job, int percent, const char *message);

#endif
