/* workers/worker.c — the worker runtime: fetch, run, heartbeat, record, shut down.
 *
 * Three Redis connections share the loop: "commands" carries every script (fetch,
 * finish, release, heartbeat, progress; hiredis pipelines them), "wait" blocks in
 * BZPOPMIN on the queue markers when every queue is empty, "pubsub" hears cancel
 * requests. Up to FETCH_DEPTH fetches are outstanding, each for at most half the slots,
 * so that Redis works on one while we start the jobs of another: the completions of a
 * batch follow the next fetch, and both are written at once, before the next reply
 * already read is taken (Redis answers a client only after running everything it read
 * from it, so one fetch at a time left it idle while the worker took each batch, and the
 * worker idle while Redis ran the next). An outcome that cannot be sent (or
 * got no answer) is kept and sent again once reconnected; a copy Redis already applied
 * is refused as stale. Job objects are recycled (their timeout timer stays initialised). */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/util.h"
#include "workers/redis.h"
#include "workers/runtime.h"
#include "workers/worker.h"

#define FETCH_MAX 256 /* jobs asked for by one fetch */
#define RESEND_MS 250 /* completions Redis refused for now go again after this */
#define FETCH_DEPTH 2 /* fetches outstanding at once */
#define WAIT_S 2      /* how long to block on the markers when every queue is empty */
#define WEIGHT_MAX 1000

enum { PH_RUNNING, PH_DRAINING, PH_RELEASING, PH_CLOSING };

struct wqueue {
    char name[Q_NAME_MAX + 1];
    int weight;
};

/* The heartbeat of one queue; at most one outstanding. */
struct beat {
    wk_worker_t *w;
    q_argv_t *cmd; /* NULL: none outstanding */
};

/* One fetch; the worker has FETCH_DEPTH of them. */
struct fetch {
    wk_worker_t *w;
    q_argv_t *cmd; /* NULL: not outstanding */
    int queue;     /* index in queues */
    int n;         /* jobs asked for */
};

/* A progress command; the job may be gone by the time it is answered. */
struct progress {
    wk_worker_t *w;
    q_argv_t *cmd;
    char id[Q_ID_SIZE];
    long long token;
};

struct wk_worker {
    uv_loop_t loop;
    char prefix[128]; /* "cv:" */
    char id[128];     /* host:pid:random */
    wk_redis_t *cmd, *wait, *sub;
    struct wqueue *queues;
    const char **qnames; /* the queue names, for q_cmd_wait */
    char *empty;         /* per queue: found empty since a fetch last brought jobs */
    struct beat *beats;
    int nqueues;
    struct fetch fetches[FETCH_DEPTH];
    int nfetch;  /* fetches outstanding */
    int asked;   /* jobs they asked for: slots they may fill */
    int waiting; /* blocked on the queue markers */
    int phase;           /* PH_* */
    wk_job_t **run;      /* the running jobs (handler not completed) */
    int nrun, concurrency;
    const char **hb_ids; /* scratch for heartbeats, concurrency entries */
    long long *hb_tokens;
    int unacked;                       /* completions Redis has not acknowledged */
    wk_job_t *spare;                   /* recycled jobs */
    wk_job_t *blocked, **blocked_tail; /* completions not sent yet */
    int holding;                       /* taking a batch: completions wait in blocked */
    uv_timer_t heartbeat, stop_timer;
    uv_timer_t resend; /* sends again the completions Redis refused for a while */
    uv_signal_t sigterm, sigint;
    uint64_t rng;
};

static void fetch(wk_worker_t *w);
static void check_stopped(wk_worker_t *w);

const char *wk_rt_prefix(const wk_worker_t *w) { return w->prefix; }
wk_redis_t *wk_rt_redis(wk_worker_t *w) { return w->cmd; }
uv_loop_t *wk_rt_loop(wk_worker_t *w) { return &w->loop; }

/* ---- commands ------------------------------------------------------------------- */

/* Sends a script on the commands connection. Returns 0, or -1 when not connected. */
static int send_script(wk_worker_t *w, q_argv_t *cmd, wk_redis_reply_fn fn, void *data)
{
    return wk_redis_command(w->cmd, cmd->argc, (const char **)cmd->argv, cmd->len,
                            cm_cfg.redis_timeout_ms, fn, data);
}

/* After a NOSCRIPT error (Redis lost its script cache) sends cmd again as EVAL. Returns 1
 * if it did; if it could not, the reply is treated as missing (*reply set to NULL). */
static int resent_as_eval(wk_worker_t *w, redisReply **reply, q_argv_t *cmd,
                          wk_redis_reply_fn fn, void *data)
{
    if (!q_reply_noscript(*reply)) return 0;
    if (q_argv_to_eval(cmd) == 0 && send_script(w, cmd, fn, data) == 0) return 1;
    *reply = NULL;
    return 0;
}

/* ---- jobs ----------------------------------------------------------------------- */

static wk_job_t *job_get(wk_worker_t *w)
{
    wk_job_t *job = w->spare;
    if (job) {
        w->spare = job->next;
    } else {
        job = calloc(1, sizeof(*job));
        if (!job) return NULL;
        uv_timer_init(&w->loop, &job->timer);
        job->timer.data = job;
    }
    job->w = w;
    job->slot = -1;
    job->stop = WK_STOP_NONE;
    job->lost = job->done = 0;
    job->type = NULL;
    job->input = NULL;
    job->data = NULL;
    job->cmd = NULL;
    job->next = NULL;
    job->started = uv_now(&w->loop);
    return job;
}

static void job_put(wk_worker_t *w, wk_job_t *job)
{
    json_decref(job->input);
    job->input = NULL;
    job->next = w->spare;
    w->spare = job;
}

static void run_add(wk_worker_t *w, wk_job_t *job)
{
    job->slot = w->nrun;
    w->run[w->nrun++] = job;
}

static void run_remove(wk_worker_t *w, wk_job_t *job)
{
    wk_job_t *last = w->run[--w->nrun];
    w->run[job->slot] = last;
    last->slot = job->slot;
    job->slot = -1;
}

/* The running job id with token, or with the smallest token when token < 0. */
static wk_job_t *find(wk_worker_t *w, const char *id, long long token)
{
    wk_job_t *found = NULL;
    for (int i = 0; i < w->nrun; i++) {
        wk_job_t *j = w->run[i];
        if (strcmp(j->id, id) != 0) continue;
        if (j->token == token) return j;
        if (token < 0 && (!found || j->token < found->token)) found = j;
    }
    return found;
}

/* Asks a running job to stop; the first reason is kept, the handler then completes. */
static void stop_job(wk_job_t *job, int why)
{
    static const char *const reasons[] = {"", "cancel requested", "timed out",
                                          "lease lost", "shutting down"};
    if (job->stop != WK_STOP_NONE) return;
    job->stop = why;
    uv_timer_stop(&job->timer);
    if (why == WK_STOP_SHUTDOWN)
        LOG_JOB_DEBUG(job->id, "stopping attempt %d: %s", job->attempt, reasons[why]);
    else
        LOG_JOB_INFO(job->id, "stopping attempt %d: %s", job->attempt, reasons[why]);
    if (job->type && job->type->cancel) job->type->cancel(job);
}

static void on_job_timeout(uv_timer_t *t) { stop_job(t->data, WK_STOP_TIMEOUT); }

/* Our lease on the job was reclaimed: stop it, and record nothing when it completes. */
static void mark_lost(wk_job_t *job)
{
    job->lost = 1;
    stop_job(job, WK_STOP_LOST);
}

/* From a heartbeat: the oldest attempt of id is the one whose lease went. */
static void on_lost(void *ctx, const char *id)
{
    wk_job_t *job = find(ctx, id, -1);
    if (job && !job->lost) mark_lost(job);
}

static void on_cancel_requested(void *ctx, const char *id)
{
    wk_worker_t *w = ctx;
    /* downwards: a job that completes at once leaves its slot to one already seen */
    for (int i = w->nrun - 1; i >= 0; i--)
        if (strcmp(w->run[i]->id, id) == 0) stop_job(w->run[i], WK_STOP_USER);
}

static void on_cancel_message(wk_redis_t *r, const char *payload, size_t len, void *data)
{
    char id[Q_ID_SIZE];
    (void)r;
    if (len >= sizeof(id)) return;
    memcpy(id, payload, len);
    id[len] = '\0';
    on_cancel_requested(data, id);
}

static void on_job_ack(wk_redis_t *r, redisReply *reply, void *data);

/* Keeps a completion until flush_blocked (connection back, or the batch taken). */
static void block(wk_worker_t *w, wk_job_t *job)
{
    job->next = NULL;
    *w->blocked_tail = job;
    w->blocked_tail = &job->next;
}

/* Completions that went to Redis in one merged finish call. */
struct batch {
    wk_worker_t *w;
    q_argv_t *cmd;
    int n;
    wk_job_t *jobs[];
};

static void on_batch_ack(wk_redis_t *r, redisReply *reply, void *data);

/* Sends the k completions of jobs as one call (takes merged). Returns 0 or -1. */
static int send_batch(wk_worker_t *w, wk_job_t **jobs, int k, q_argv_t *merged)
{
    struct batch *b = malloc(sizeof(*b) + (size_t)k * sizeof(wk_job_t *));
    if (!b) {
        q_argv_free(merged);
        return -1;
    }
    b->w = w;
    b->cmd = merged;
    b->n = k;
    memcpy(b->jobs, jobs, (size_t)k * sizeof(wk_job_t *));
    if (send_script(w, merged, on_batch_ack, b) != 0) {
        q_argv_free(merged);
        free(b);
        return -1;
    }
    return 0;
}

/* Sends the completions kept by block, in order, if connected; runs of finishes of one
 * queue go as one call each (a batch of noop jobs costs Redis one script call). */
static void flush_blocked(wk_worker_t *w)
{
    enum { BATCH_MAX = 256 };
    wk_job_t *job = w->blocked, *jobs[BATCH_MAX];
    q_argv_t *cmds[BATCH_MAX], *merged;

    if (!job || !wk_redis_connected(w->cmd)) return;
    w->blocked = NULL;
    w->blocked_tail = &w->blocked;
    while (job) {
        int n = 0, k;
        for (wk_job_t *j = job; j && n < BATCH_MAX; j = j->next) {
            jobs[n] = j;
            cmds[n++] = j->cmd;
        }
        k = q_cmd_finish_merge(cmds, n, &merged);
        if (k < 2) k = 1;
        wk_job_t *next = jobs[k - 1]->next;
        if (k >= 2 && send_batch(w, jobs, k, merged) == 0) {
            job = next;
            continue;
        }
        for (int i = 0; i < k; i++) /* alone, or the batch could not go */
            if (send_script(w, jobs[i]->cmd, on_job_ack, jobs[i]) != 0) block(w, jobs[i]);
        job = next;
    }
}

static void on_resend(uv_timer_t *t) { flush_blocked(t->data); }

/* 1 if reply is an error Redis gives while it cannot take writes for a while (loading
 * its data, a script running long, a replica not yet promoted, out of memory, a failed
 * save): the completion is kept and sent again, not dropped. */
static int refused_for_now(const redisReply *reply)
{
    static const char *const codes[] = {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY",
                                        "MISCONF", "OOM", "CLUSTERDOWN", "NOREPLICAS", NULL};
    if (!reply || reply->type != REDIS_REPLY_ERROR || !reply->str) return 0;
    for (int i = 0; codes[i]; i++) {
        size_t n = strlen(codes[i]);
        if (strncmp(reply->str, codes[i], n) == 0 && (reply->str[n] == ' ' || !reply->str[n]))
            return 1;
    }
    return 0;
}

/* Keeps the completion of job when Redis did not take it, and returns 1: no reply (it goes
 * again once reconnected; a late copy is refused as stale) or refused for now (again after
 * RESEND_MS). Returns 0 when the reply is Redis's answer, or the worker is closing. */
static int kept(wk_worker_t *w, wk_job_t *job, const redisReply *reply)
{
    if (w->phase == PH_CLOSING || (reply && !refused_for_now(reply))) return 0;
    block(w, job);
    if (reply && !uv_is_active((uv_handle_t *)&w->resend)) { /* one line per round */
        LOG_JOB_WARN(job->id, "Redis refused outcomes for now (%.60s): sending them again in %d ms",
                     reply->str, RESEND_MS);
        uv_timer_start(&w->resend, on_resend, RESEND_MS, 0);
    }
    return 1;
}

/* Records Redis's answer to the i-th completion of a call and recycles the job. */
static void acked(wk_worker_t *w, wk_job_t *job, const redisReply *reply, int i)
{
    const char *st = q_finish_status(reply, i);

    if (!reply)
        LOG_JOB_WARN(job->id, "outcome not recorded before exit: left to its lease expiry");
    else if (reply->type == REDIS_REPLY_ERROR)
        LOG_JOB_ERR(job->id, "Redis refused the outcome: %s", reply->str);
    else if ((reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) ||
             (st && strcmp(st, "stale") == 0))
        LOG_JOB_WARN(job->id, "our lease had been reclaimed: outcome not recorded "
                              "(the job runs again)");
    else if (st)
        LOG_JOB_DEBUG(job->id, "recorded: %s", st);
    q_argv_free(job->cmd);
    job->cmd = NULL;
    w->unacked--;
    job_put(w, job);
}

static void on_job_ack(wk_redis_t *r, redisReply *reply, void *data)
{
    wk_job_t *job = data;
    wk_worker_t *w = job->w;
    (void)r;

    if (resent_as_eval(w, &reply, job->cmd, on_job_ack, job)) return;
    if (kept(w, job, reply)) return;
    acked(w, job, reply, 0);
    check_stopped(w);
}

static void on_batch_ack(wk_redis_t *r, redisReply *reply, void *data)
{
    struct batch *b = data;
    wk_worker_t *w = b->w;
    (void)r;

    if (resent_as_eval(w, &reply, b->cmd, on_batch_ack, b)) return;
    for (int i = 0; i < b->n; i++) /* a kept one goes again on its own vector */
        if (!kept(w, b->jobs[i], reply)) acked(w, b->jobs[i], reply, i);
    q_argv_free(b->cmd);
    free(b);
    check_stopped(w);
}

void wk_rt_done(wk_job_t *job, q_argv_t *cmd)
{
    wk_worker_t *w = job->w;

    job->done = 1;
    uv_timer_stop(&job->timer);
    if (job->slot >= 0) run_remove(w, job);
    if (!cmd) {
        job_put(w, job);
    } else {
        job->cmd = cmd;
        w->unacked++;
        if (w->holding || send_script(w, cmd, on_job_ack, job) != 0) block(w, job);
    }
    if (w->phase == PH_RUNNING)
        fetch(w);
    else
        check_stopped(w);
}

static void on_progressed(wk_redis_t *r, redisReply *reply, void *data)
{
    struct progress *p = data;
    wk_job_t *job;
    (void)r;

    if (resent_as_eval(p->w, &reply, p->cmd, on_progressed, p)) return;
    /* -1: our lease is gone; 1: a cancel was requested */
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer != 0 &&
        (job = find(p->w, p->id, p->token))) {
        if (reply->integer < 0)
            mark_lost(job);
        else
            stop_job(job, WK_STOP_USER);
    }
    q_argv_free(p->cmd);
    free(p);
}

void wk_rt_progress(wk_job_t *job, q_argv_t *cmd)
{
    struct progress *p;

    if (!cmd) return;
    p = malloc(sizeof(*p));
    if (!p) {
        q_argv_free(cmd);
        return;
    }
    p->w = job->w;
    p->cmd = cmd;
    memcpy(p->id, job->id, sizeof(p->id));
    p->token = job->token;
    if (send_script(job->w, cmd, on_progressed, p) != 0) {
        q_argv_free(cmd);
        free(p);
    }
}

/* Starts one fetched job, or ends at once an attempt that cannot start. */
static void take(wk_worker_t *w, const char *queue, const q_fetched_t *f)
{
    wk_job_t *job = job_get(w);
    const wk_type_t *type;
    q_record_t rec;
    json_error_t jerr;
    char why[256], field[64], msg[128];

    if (!job) {
        LOG_JOB_ERR(f->id, "out of memory: left to its lease expiry");
        return;
    }
    if (w->nrun >= w->concurrency) { /* more than asked for: never (see on_fetched) */
        LOG_JOB_ERR(f->id, "fetched beyond the concurrency: left to its lease expiry");
        job_put(w, job);
        return;
    }
    memcpy(job->id, f->id, sizeof(job->id));
    job->token = f->token;
    job->attempt = f->attempt;
    job->queue = queue;
    run_add(w, job);
    if (w->phase != PH_RUNNING) { /* fetched while stopping: hand it back */
        job->stop = WK_STOP_SHUTDOWN;
        wk_job_canceled(job);
        return;
    }
    if (q_record_decode(f->rec, f->reclen, &rec, why, sizeof(why)) != 0) {
        wk_job_end(job, "dead", "CORRUPT_RECORD", why, 0);
        return;
    }
    if (strcmp(rec.id, job->id) != 0) {
        snprintf(why, sizeof(why), "the record belongs to job %.40s", rec.id);
        wk_job_end(job, "dead", "CORRUPT_RECORD", why, 0);
        goto out;
    }
    type = wk_type_find(rec.type);
    if (!type) {
        snprintf(why, sizeof(why), "no handler for job type '%.64s' in this worker", rec.type);
        wk_job_end(job, "retry", "UNKNOWN_JOB_TYPE", why, wk_type_backoff_ms(NULL, job->attempt));
        goto out;
    }
    job->input = json_loads(rec.input, 0, &jerr);
    if (!job->input) {
        snprintf(why, sizeof(why), "input is not valid JSON: %s", jerr.text);
        wk_job_end(job, "dead", "CORRUPT_RECORD", why, 0);
        goto out;
    }
    if (wk_type_validate(type, job->input, field, sizeof(field), msg, sizeof(msg)) != 0) {
        snprintf(why, sizeof(why), "%s: %s", field, msg);
        wk_job_end(job, "failed", "INVALID_INPUT", why, 0);
        goto out;
    }
    job->type = type;
    job->timeout_ms = rec.timeout_ms > 0 ? rec.timeout_ms : wk_type_timeout_ms(type);
    LOG_JOB_DEBUG(job->id, "attempt %d of %s started (queue %s)", job->attempt, type->name,
                  queue);
    type->start(job);
    if (job->slot >= 0) /* still running */
        uv_timer_start(&job->timer, on_job_timeout, (uint64_t)job->timeout_ms, 0);
out:
    q_record_clear(&rec);
}

/* ---- fetching ------------------------------------------------------------------- */

static uint64_t rnd(wk_worker_t *w) /* xorshift64* */
{
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return w->rng * 2685821657736338717ULL;
}

/* The queue for the next fetch: weighted random among those not found empty since a
 * fetch last brought jobs (Sidekiq's weighted mode: a heavier queue is tried first more
 * often, but none starves), or -1 when every queue was. */
static int pick_queue(wk_worker_t *w)
{
    int total = 0, r;
    for (int i = 0; i < w->nqueues; i++)
        if (!w->empty[i]) total += w->queues[i].weight;
    if (total == 0) return -1;
    r = (int)(rnd(w) % (uint64_t)total);
    for (int i = 0; i < w->nqueues; i++) {
        if (w->empty[i]) continue;
        if (r < w->queues[i].weight) return i;
        r -= w->queues[i].weight;
    }
    return -1; /* cannot happen */
}

/* Every queue may have jobs again (after a wait, or a fetch that brought some). */
static void new_round(wk_worker_t *w) { memset(w->empty, 0, (size_t)w->nqueues); }

static void on_woken(wk_redis_t *r, redisReply *reply, void *data)
{
    wk_worker_t *w = data;
    (void)r;
    w->waiting = 0;
    new_round(w);
    if (!reply) return; /* fetching resumes when the wait connection is back */
    if (reply->type == REDIS_REPLY_ERROR) {
        LOG_ERR("waiting for jobs failed: %s", reply->str); /* the heartbeat retries */
        return;
    }
    fetch(w);
}

/* Every queue is empty: blocks on their markers until a job is enqueued or WAIT_S. */
static void wait_for_jobs(wk_worker_t *w)
{
    q_argv_t *cmd;

    if (w->phase != PH_RUNNING || !wk_redis_connected(w->wait)) return;
    cmd = q_cmd_wait(w->prefix, w->qnames, w->nqueues, WAIT_S);
    if (cmd && wk_redis_command(w->wait, cmd->argc, (const char **)cmd->argv, cmd->len,
                                WAIT_S * 1000 + cm_cfg.redis_timeout_ms, on_woken, w) == 0)
        w->waiting = 1;
    q_argv_free(cmd);
}

static void on_fetched(wk_redis_t *r, redisReply *reply, void *data)
{
    struct fetch *ft = data;
    wk_worker_t *w = ft->w;
    const char *queue = w->queues[ft->queue].name;
    q_fetched_t *f = NULL;
    int n = 0, rc;
    (void)r;

    if (resent_as_eval(w, &reply, ft->cmd, on_fetched, ft)) return;
    q_argv_free(ft->cmd);
    ft->cmd = NULL;
    w->nfetch--;
    if (!reply) { /* leased jobs in a lost reply come back after their lease */
        w->asked -= ft->n;
        check_stopped(w);
        return;
    }
    if ((rc = q_parse_fetch(reply, &f, &n)) != 0)
        LOG_ERR("fetch from queue %s failed: %s", queue,
                reply->type == REDIS_REPLY_ERROR ? reply->str : q_strerror(rc));
    /* Slots not filled are free again; a filled one stays asked for until its job is
     * taken: a job that ends within take() fetches again, and the rest of the batch
     * must not look like free slots then. */
    w->asked -= ft->n - (n < ft->n ? n : ft->n);
    /* The batch's completions are sent after the next fetch, so Redis runs that fetch
     * first and we take its jobs while it records these. */
    w->holding = 1;
    for (int i = 0; i < n; i++) {
        if (w->asked > 0) w->asked--;
        take(w, queue, &f[i]);
    }
    w->holding = 0;
    q_fetched_free(f, n);
    if (w->phase == PH_RUNNING) {
        if (n > 0)
            new_round(w);
        else
            w->empty[ft->queue] = 1;
        if (pick_queue(w) < 0 && w->nfetch == 0) {
            new_round(w);
            wait_for_jobs(w);
        } else {
            fetch(w);
        }
    }
    flush_blocked(w);
    wk_redis_flush(w->cmd); /* before the next reply already read is taken */
    check_stopped(w);
}

/* Sends fetches while running, fewer than FETCH_DEPTH are outstanding, no wait is, and
 * slots are free that no outstanding fetch may fill: the first for all of them, another
 * for at least half its share (FETCH_MAX at most each). */
static void fetch(wk_worker_t *w)
{
    int share = (w->concurrency + FETCH_DEPTH - 1) / FETCH_DEPTH;
    if (share > FETCH_MAX) share = FETCH_MAX;
    /* every queue found empty, yet no wait and no fetch outstanding (the wait could not
     * be sent, or the last fetch got no reply): a new round (the heartbeat retries) */
    if (w->nfetch == 0 && !w->waiting && pick_queue(w) < 0) new_round(w);

    while (w->phase == PH_RUNNING && !w->waiting && w->nfetch < FETCH_DEPTH &&
           wk_redis_connected(w->cmd)) {
        int room = w->concurrency - w->nrun - w->asked, q;
        struct fetch *ft = NULL;
        if (room <= 0 || (w->nfetch > 0 && room < (share + 1) / 2)) return;
        if ((q = pick_queue(w)) < 0) return; /* the outstanding fetch decides */
        if (room > share) room = share;
        for (int i = 0; i < FETCH_DEPTH && !ft; i++)
            if (!w->fetches[i].cmd) ft = &w->fetches[i];
        ft->queue = q;
        ft->n = room;
        ft->cmd = q_cmd_fetch(w->prefix, w->queues[ft->queue].name, room, cm_cfg.lease_ms,
                              w->id);
        if (!ft->cmd || send_script(w, ft->cmd, on_fetched, ft) != 0) { /* the heartbeat retries */
            q_argv_free(ft->cmd);
            ft->cmd = NULL;
            return;
        }
        w->nfetch++;
        w->asked += room;
    }
}

static void on_cmd_up(wk_redis_t *r, void *data)
{
    (void)r;
    flush_blocked(data);
    fetch(data);
}

static void on_wait_up(wk_redis_t *r, void *data)
{
    (void)r;
    fetch(data);
}

/* ---- heartbeat ------------------------------------------------------------------ */

static void on_beat(wk_redis_t *r, redisReply *reply, void *data)
{
    struct beat *b = data;
    (void)r;

    if (resent_as_eval(b->w, &reply, b->cmd, on_beat, b)) return;
    q_argv_free(b->cmd);
    b->cmd = NULL;
    if (reply && q_parse_heartbeat(reply, on_lost, on_cancel_requested, b->w) != 0)
        LOG_ERR("heartbeat failed: %s",
                reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
}

/* Renews the leases of every running job, one script per queue. */
static void on_heartbeat(uv_timer_t *t)
{
    wk_worker_t *w = t->data;

    fetch(w); /* picks up again after a fetch that failed for want of memory */
    for (int q = 0; q < w->nqueues; q++) {
        struct beat *b = &w->beats[q];
        int n = 0;
        if (b->cmd) continue;
        for (int i = 0; i < w->nrun; i++) {
            wk_job_t *job = w->run[i];
            if (job->queue != w->queues[q].name || job->lost) continue;
            w->hb_ids[n] = job->id;
            w->hb_tokens[n++] = job->token;
        }
        if (n == 0) continue;
        b->cmd = q_cmd_heartbeat(w->prefix, w->queues[q].name, cm_cfg.lease_ms, n, w->hb_ids,
                                 w->hb_tokens);
        if (b->cmd && send_script(w, b->cmd, on_beat, b) != 0) {
            q_argv_free(b->cmd);
            b->cmd = NULL;
        }
    }
}

/* ---- shutdown ------------------------------------------------------------------- */

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Closes the connections (unanswered commands are called back with NULL) and every
 * handle, which ends uv_run. */
static void close_all(wk_worker_t *w)
{
    w->phase = PH_CLOSING;
    wk_types_close(); /* types' own handles (an HTTP client) before the walk below */
    wk_redis_free(w->cmd);
    wk_redis_free(w->wait);
    wk_redis_free(w->sub);
    w->cmd = w->wait = w->sub = NULL;
    uv_walk(&w->loop, close_handle, NULL);
}

static void release_all(wk_worker_t *w);

static void on_stop_timer(uv_timer_t *t)
{
    wk_worker_t *w = t->data;

    if (w->phase == PH_DRAINING) {
        LOG_INFO("shutdown timeout reached");
        release_all(w);
        return;
    }
    if (w->phase == PH_RELEASING)
        LOG_WARN("giving up on %d running jobs and %d unrecorded outcomes: they run again "
                 "once their leases expire", w->nrun, w->unacked);
    close_all(w);
}

/* Once stopping and nothing is left in flight, closes everything (from a timer, outside
 * any hiredis callback). */
static void check_stopped(wk_worker_t *w)
{
    if ((w->phase == PH_DRAINING || w->phase == PH_RELEASING) && w->nrun == 0 &&
        w->unacked == 0 && w->nfetch == 0) {
        w->phase = PH_CLOSING;
        uv_timer_start(&w->stop_timer, on_stop_timer, 0, 0);
    }
}

/* Stops every running job; each is handed back to its queue as its handler completes. */
static void release_all(wk_worker_t *w)
{
    w->phase = PH_RELEASING;
    if (w->nrun) LOG_INFO("handing back %d running jobs", w->nrun);
    for (int i = w->nrun - 1; i >= 0; i--) stop_job(w->run[i], WK_STOP_SHUTDOWN);
    uv_timer_start(&w->stop_timer, on_stop_timer, 2 * (uint64_t)cm_cfg.redis_timeout_ms + 1000,
                   0);
    check_stopped(w);
}

static void on_signal(uv_signal_t *s, int signum)
{
    wk_worker_t *w = s->data;

    if (w->phase == PH_RUNNING) {
        LOG_INFO("signal %d: no new jobs; %d running may finish within %d ms", signum, w->nrun,
                 cm_cfg.shutdown_timeout_ms);
        w->phase = PH_DRAINING;
        wk_redis_free(w->wait);
        w->wait = NULL;
        uv_timer_start(&w->stop_timer, on_stop_timer, (uint64_t)cm_cfg.shutdown_timeout_ms, 0);
        check_stopped(w);
    } else if (w->phase == PH_DRAINING) {
        LOG_INFO("signal %d again: handing back the running jobs now", signum);
        release_all(w);
    }
}

/* ---- set-up --------------------------------------------------------------------- */

/* Parses "name[:weight],..." into w->queues. Returns 0 or -1 (logged). */
static int parse_queues(wk_worker_t *w, const char *spec)
{
    char *copy = strdup(spec), *save = NULL, *tok;
    int n = 1, rc = -1;

    if (!copy) return -1;
    for (const char *c = spec; *c; c++) n += *c == ',';
    w->queues = calloc((size_t)n, sizeof(*w->queues));
    if (!w->queues) goto out;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':'), *end;
        long weight = 1;
        size_t len;

        while (*tok == ' ') tok++;
        if (colon) {
            *colon = '\0';
            weight = strtol(colon + 1, &end, 10);
            while (*end == ' ') end++;
            if (end == colon + 1 || *end || weight < 1 || weight > WEIGHT_MAX) {
                LOG_ERR("CONVEYOR_QUEUES: queue '%s' needs a weight between 1 and %d", tok,
                        WEIGHT_MAX);
                goto out;
            }
        }
        len = strlen(tok);
        while (len && tok[len - 1] == ' ') tok[--len] = '\0';
        if (!q_valid_queue(tok)) {
            LOG_ERR("CONVEYOR_QUEUES: '%s' is not a valid queue name (1-64 of A-Za-z0-9_.-)",
                    tok);
            goto out;
        }
        for (int i = 0; i < w->nqueues; i++)
            if (strcmp(w->queues[i].name, tok) == 0) {
                LOG_ERR("CONVEYOR_QUEUES: queue '%s' is listed twice", tok);
                goto out;
            }
        memcpy(w->queues[w->nqueues].name, tok, len + 1);
        w->queues[w->nqueues++].weight = (int)weight;
    }
    if (w->nqueues == 0) {
        LOG_ERR("CONVEYOR_QUEUES: no queue given");
        goto out;
    }
    rc = 0;
out:
    free(copy);
    return rc;
}

static void free_worker(wk_worker_t *w)
{
    wk_job_t *lists[] = {w->spare, w->blocked};

    for (int i = 0; i < w->nrun; i++) { /* abandoned at a forced exit */
        json_decref(w->run[i]->input);
        free(w->run[i]);
    }
    for (int l = 0; l < 2; l++)
        for (wk_job_t *job = lists[l], *next; job; job = next) {
            next = job->next;
            q_argv_free(job->cmd);
            json_decref(job->input);
            free(job);
        }
    free(w->queues);
    free(w->qnames);
    free(w->empty);
    free(w->beats);
    free(w->run);
    free(w->hb_ids);
    free(w->hb_tokens);
    free(w);
}

/* Allocates what depends on the queues and the concurrency. Returns 0 or -1. */
static int alloc_tables(wk_worker_t *w)
{
    size_t nq = (size_t)w->nqueues, nc = (size_t)w->concurrency;

    w->qnames = calloc(nq, sizeof(*w->qnames));
    w->empty = calloc(nq, 1);
    w->beats = calloc(nq, sizeof(*w->beats));
    w->run = calloc(nc, sizeof(*w->run));
    w->hb_ids = calloc(nc, sizeof(*w->hb_ids));
    w->hb_tokens = calloc(nc, sizeof(*w->hb_tokens));
    if (!w->qnames || !w->empty || !w->beats || !w->run || !w->hb_ids || !w->hb_tokens)
        return -1;
    for (int i = 0; i < w->nqueues; i++) {
        w->qnames[i] = w->queues[i].name;
        w->beats[i].w = w;
    }
    return 0;
}

static void make_id(wk_worker_t *w)
{
    char host[64] = "unknown", suffix[8] = "0";

    if (gethostname(host, sizeof(host)) != 0) snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    cm_random_id(suffix, sizeof(suffix), "", 6);
    snprintf(w->id, sizeof(w->id), "%s:%ld:%s", host, (long)getpid(), suffix);
    w->rng = (uint64_t)cm_now_ms() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid() ^
             (uint64_t)(uintptr_t)w;
    if (!w->rng) w->rng = 1;
}

int wk_main(int argc, char **argv)
{
    wk_worker_t *w;
    char chan[256];
    uint64_t beat_ms = (uint64_t)cm_cfg.lease_ms / 3;
    int rc = 0;

    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: conveyor worker (configured by CONVEYOR_* variables)\n");
        return 2;
    }
    if (strlen(cm_cfg.redis_prefix) + 2 > sizeof(w->prefix)) {
        LOG_ERR("CONVEYOR_REDIS_PREFIX is too long");
        return 2;
    }
    if (!(w = calloc(1, sizeof(*w)))) return 1;
    w->concurrency = cm_cfg.concurrency;
    for (int i = 0; i < FETCH_DEPTH; i++) w->fetches[i].w = w;
    w->blocked_tail = &w->blocked;
    if (parse_queues(w, cm_cfg.queues) != 0) {
        free_worker(w);
        return 2;
    }
    if (alloc_tables(w) != 0 || uv_loop_init(&w->loop) != 0) {
        LOG_ERR("worker: out of memory");
        free_worker(w);
        return 1;
    }
    snprintf(w->prefix, sizeof(w->prefix), "%s:", cm_cfg.redis_prefix);
    make_id(w);
    signal(SIGPIPE, SIG_IGN); /* hiredis writes to sockets Redis may have closed */

    uv_timer_init(&w->loop, &w->heartbeat);
    uv_timer_init(&w->loop, &w->stop_timer);
    uv_timer_init(&w->loop, &w->resend);
    uv_signal_init(&w->loop, &w->sigterm);
    uv_signal_init(&w->loop, &w->sigint);
    w->heartbeat.data = w->stop_timer.data = w->resend.data = w->sigterm.data = w->sigint.data = w;
    w->cmd = wk_redis_new(&w->loop, "commands", cm_cfg.redis_host, cm_cfg.redis_port,
                          cm_cfg.redis_timeout_ms, on_cmd_up, w);
    w->wait = wk_redis_new(&w->loop, "wait", cm_cfg.redis_host, cm_cfg.redis_port,
                           cm_cfg.redis_timeout_ms, on_wait_up, w);
    w->sub = wk_redis_new(&w->loop, "pubsub", cm_cfg.redis_host, cm_cfg.redis_port,
                          cm_cfg.redis_timeout_ms, NULL, w);
    q_channel_cancel(w->prefix, chan, sizeof(chan));
    if (!w->cmd || !w->wait || !w->sub || wk_redis_subscribe(w->sub, chan, on_cancel_message)) {
        LOG_ERR("worker: out of memory");
        close_all(w);
        rc = 1;
    } else {
        if (!beat_ms) beat_ms = 1;
        uv_timer_start(&w->heartbeat, on_heartbeat, beat_ms, beat_ms);
        uv_signal_start(&w->sigterm, on_signal, SIGTERM);
        uv_signal_start(&w->sigint, on_signal, SIGINT);
        LOG_INFO("worker %s started: queues %s, concurrency %d, redis %s:%d, prefix %s", w->id,
                 cm_cfg.queues, w->concurrency, cm_cfg.redis_host, cm_cfg.redis_port,
                 w->prefix);
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) != 0) {
        LOG_ERR("worker: the loop did not close cleanly");
        rc = 1;
    } else if (rc == 0) {
        LOG_INFO("worker %s stopped", w->id);
    }
    free_worker(w);
    return rc;
}
