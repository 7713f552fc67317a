/* workers/job.c — the handler API: a handler's completion becomes the finish (or release)
 * command that records it, according to why the runtime may have stopped the job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "workers/runtime.h"

const char *wk_job_id(const wk_job_t *job) { return job->id; }
const json_t *wk_job_input(const wk_job_t *job) { return job->input; }
int wk_job_attempt(const wk_job_t *job) { return job->attempt; }
uv_loop_t *wk_job_loop(wk_job_t *job) { return wk_rt_loop(job->w); }
wk_redis_t *wk_job_redis(wk_job_t *job) { return wk_rt_redis(job->w); }
const char *wk_job_prefix(const wk_job_t *job) { return wk_rt_prefix(job->w); }
void *wk_job_data(const wk_job_t *job) { return job->data; }
void wk_job_set_data(wk_job_t *job, void *data) { job->data = data; }

/* Milliseconds since the attempt started. */
static unsigned long long elapsed(wk_job_t *job)
{
    return (unsigned long long)(uv_now(wk_rt_loop(job->w)) - job->started);
}

/* Marks the job completed. Returns 0 the first time, -1 (logged) after. */
static int complete_once(wk_job_t *job)
{
    if (job->done) {
        LOG_JOB_WARN(job->id, "the handler completed the job more than once: ignored");
        return -1;
    }
    job->done = 1;
    return 0;
}

/* Sends the finish command (payload borrowed; NULL: out of memory). */
static void finish(wk_job_t *job, const char *outcome, const char *payload, int64_t delay_ms)
{
    q_argv_t *cmd = NULL;
    if (payload)
        cmd = q_cmd_finish(wk_rt_prefix(job->w), job->queue, job->id, job->token, outcome,
                           payload, delay_ms);
    if (!cmd)
        LOG_JOB_ERR(job->id, "out of memory: outcome %s not recorded (the job will run again)",
                    outcome);
    wk_rt_done(job, cmd);
}

/* {"code","message","retryable"} as compact JSON (caller frees), NULL on OOM. */
static char *error_json(const char *code, const char *message, int retryable)
{
    json_t *m = json_string(message ? message : "");
    json_t *e;
    char *s;

    if (!m) m = json_string("(message is not valid UTF-8)");
    e = json_pack("{s:s, s:o, s:b}", "code", code, "message", m, "retryable", retryable);
    s = e ? json_dumps(e, JSON_COMPACT) : NULL;
    json_decref(e);
    return s;
}

void wk_job_end(wk_job_t *job, const char *outcome, const char *code, const char *message,
                int64_t delay_ms)
{
    int retry = strcmp(outcome, "retry") == 0;
    char *err = error_json(code, message, retry);

    job->done = 1;
    if (retry)
        LOG_JOB_INFO(job->id, "attempt %d failed: %s: %s (retry in %lld ms if attempts remain)",
                     job->attempt, code, message, (long long)delay_ms);
    else if (strcmp(outcome, "canceled") == 0)
        LOG_JOB_INFO(job->id, "attempt %d canceled", job->attempt);
    else
        LOG_JOB_WARN(job->id, "attempt %d ended %s: %s: %s", job->attempt, outcome, code,
                     message);
    finish(job, outcome, err, delay_ms);
    free(err);
}

/* A completion other than success after the runtime asked the job to stop: records what
 * the stop calls for. Returns 1 if it did, 0 when no stop was asked. */
static int end_stopped(wk_job_t *job)
{
    char msg[96];

    if (job->lost) {
        LOG_JOB_DEBUG(job->id, "stopped after losing its lease (%llu ms)", elapsed(job));
        wk_rt_done(job, NULL);
        return 1;
    }
    switch (job->stop) {
    case WK_STOP_USER:
        wk_job_end(job, "canceled", "CANCELED", "canceled by request", 0);
        return 1;
    case WK_STOP_TIMEOUT:
        snprintf(msg, sizeof(msg), "the attempt ran longer than %d ms", job->timeout_ms);
        wk_job_end(job, "retry", "JOB_TIMEOUT", msg,
                   wk_type_backoff_ms(job->type, job->attempt));
        return 1;
    case WK_STOP_SHUTDOWN: {
        q_argv_t *cmd = q_cmd_release(wk_rt_prefix(job->w), job->queue, job->id, job->token);
        LOG_JOB_INFO(job->id, "handed back to queue %s (shutdown)", job->queue);
        if (!cmd) LOG_JOB_ERR(job->id, "out of memory: left to its lease expiry");
        wk_rt_done(job, cmd);
        return 1;
    }
    }
    return 0;
}

void wk_job_succeed(wk_job_t *job, json_t *result)
{
    char *text;

    if (complete_once(job)) {
        json_decref(result);
        return;
    }
    if (job->lost) {
        json_decref(result);
        end_stopped(job);
        return;
    }
    text = json_dumps(result ? result : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(result);
    LOG_JOB_DEBUG(job->id, "attempt %d succeeded in %llu ms", job->attempt, elapsed(job));
    finish(job, "succeeded", text, 0);
    free(text);
}

void wk_job_fail(wk_job_t *job, const char *code, const char *message, int retryable,
                 int64_t retry_after_ms)
{
    if (complete_once(job) || end_stopped(job)) return;
    if (!retryable) {
        wk_job_end(job, "failed", code, message, 0);
        return;
    }
    wk_job_end(job, "retry", code, message,
               retry_after_ms >= 0 ? retry_after_ms
                                   : wk_type_backoff_ms(job->type, job->attempt));
}

void wk_job_canceled(wk_job_t *job)
{
    if (complete_once(job) || end_stopped(job)) return;
    wk_job_end(job, "canceled", "CANCELED", "canceled by request", 0);
}

void wk_job_progress(wk_job_t *job, int percent, const char *message)
{
    if (job->done || job->lost) return;
    wk_rt_progress(job, q_cmd_progress(wk_rt_prefix(job->w), job->id, job->token, percent,
                                       message));
}
