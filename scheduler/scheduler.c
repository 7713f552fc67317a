/* scheduler/scheduler.c — the scheduler loop: leadership, promotion, reclaim, archive. */
#include "scheduler/scheduler.h"

#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/pg.h"
#include "common/util.h"
#include "queue/queue.h"
#include "scheduler/archive.h"
#include "scheduler/cron.h"

#define LEADER_DUTY "scheduler"
#define MOVE_BATCH 1000    /* jobs per q_promote / q_reclaim call */
#define MAX_ROUNDS 10      /* calls per queue, and archive batches, per tick */
#define BACKOFF_MIN_MS 250 /* first wait before trying a failed server again */
#define BACKOFF_MAX_MS 2000

struct sched {
    q_conn_t *q;
    PGconn *pg;           /* NULL until needed, and after it broke */
    int64_t pg_retry_at;  /* monotonic ms before which PostgreSQL is left alone */
    int pg_backoff_ms;    /* 0 while PostgreSQL works */
    int redis_backoff_ms; /* 0 while Redis answers */
    int leader;
    int64_t deadline; /* monotonic ms after which a tick starts no new round */
    sch_cron_t *cron;
    char id[320]; /* hostname:pid:random */
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int next_backoff(int cur)
{
    return cur == 0 ? BACKOFF_MIN_MS : cur >= BACKOFF_MAX_MS / 2 ? BACKOFF_MAX_MS : cur * 2;
}

/* Records how the last PostgreSQL use went: a failure drops a broken connection and
 * delays the next try; a success ends the backoff. */
static void pg_result(struct sched *s, int ok)
{
    if (ok) {
        if (s->pg_backoff_ms) LOG_INFO("PostgreSQL works again");
        s->pg_backoff_ms = 0;
        return;
    }
    if (s->pg && PQstatus(s->pg) != CONNECTION_OK) {
        LOG_WARN("PostgreSQL connection lost; reconnecting with backoff");
        PQfinish(s->pg);
        s->pg = NULL;
    }
    s->pg_backoff_ms = next_backoff(s->pg_backoff_ms);
    s->pg_retry_at = cm_mono_ms() + s->pg_backoff_ms;
}

/* The PostgreSQL connection, opened if needed; NULL during a backoff or when it cannot
 * connect (cm_pg_connect logs why). Borrowed. */
static PGconn *pg_get(struct sched *s)
{
    if (cm_mono_ms() < s->pg_retry_at) return NULL;
    if (!s->pg && !(s->pg = cm_pg_connect())) pg_result(s, 0);
    return s->pg;
}

/* Calls move (q_promote or q_reclaim) on queue while it moves full batches, at most
 * MAX_ROUNDS times and not past the tick's deadline; adds the jobs moved to *count.
 * Returns 0 or Q_EREDIS. */
static int drain(struct sched *s, int (*move)(q_conn_t *, const char *, int), const char *queue,
                 int *count)
{
    for (int round = 0; round < MAX_ROUNDS && cm_mono_ms() < s->deadline; round++) {
        int n = move(s->q, queue, MOVE_BATCH);
        if (n < 0) return n;
        *count += n;
        if (n < MOVE_BATCH) break;
    }
    return 0;
}

/* Promotes due jobs and reclaims expired leases in every queue. Returns 0 or Q_EREDIS. */
static int move_due(struct sched *s, int *promoted, int *reclaimed)
{
    char **names = NULL;
    int n = 0, rc = q_queue_names(s->q, &names, &n);

    for (int i = 0; i < n && rc == 0; i++) {
        rc = drain(s, q_promote, names[i], promoted);
        if (rc == 0) rc = drain(s, q_reclaim, names[i], reclaimed);
    }
    q_names_free(names, n);
    return rc;
}

/* Archives batches while there is something to archive (bounded like drain). Returns 0,
 * or Q_EREDIS / Q_ENOMEM; PostgreSQL failures only start its backoff. */
static int archive(struct sched *s, int *archived)
{
    PGconn *pg = pg_get(s);
    int rc = 0;

    if (!pg) return 0; /* the jobs wait in the "done" set */
    for (int round = 0; round < MAX_ROUNDS && cm_mono_ms() < s->deadline; round++) {
        rc = sch_archive(s->q, pg, cm_cfg.archive_batch, cm_cfg.retention_seconds * 1000LL,
                         cm_cfg.dead_retention_seconds * 1000LL);
        if (rc <= 0) break;
        *archived += rc;
    }
    if (rc != Q_EREDIS) pg_result(s, rc != SCH_EPG);
    return rc < 0 && rc != SCH_EPG ? rc : 0;
}

/* Takes or keeps the leadership; logs changes. Returns q_leader's answer. */
static int lead(struct sched *s)
{
    int rc = q_leader(s->q, LEADER_DUTY, s->id, cm_cfg.leader_ttl_ms);

    if (rc == 1 && !s->leader)
        LOG_INFO("leadership gained by %s", s->id);
    else if (rc == 0 && s->leader)
        LOG_WARN("leadership lost: another scheduler holds the lock");
    else if (rc < 0 && s->leader)
        LOG_WARN("leadership suspended: cannot renew the lock (Redis unreachable)");
    s->leader = rc == 1;
    return rc;
}

/* One pass. Returns 0, or Q_EREDIS / Q_ENOMEM when it had to stop early. */
static int tick(struct sched *s)
{
    int64_t mono = cm_mono_ms();
    int promoted = 0, reclaimed = 0, archived = 0, rc;

    /* Stop starting work well before the lock could lapse under a slow tick. */
    s->deadline = mono + cm_cfg.leader_ttl_ms / 2;
    rc = lead(s);
    if (rc < 0) return rc;
    if (rc == 1) {
        rc = move_due(s, &promoted, &reclaimed);
        if (rc == 0) rc = archive(s, &archived);
        int level = promoted || reclaimed || archived ? CM_LOG_INFO : CM_LOG_DEBUG;
        if (cm_log_level >= level)
            cm_log_write(level, NULL, NULL, "promoted %d, reclaimed %d, archived %d", promoted,
                         reclaimed, archived);
        if (rc < 0) return rc;
    }
    if (sch_cron_due(s->cron, mono)) {
        sch_ctx_t ctx = {s->q, pg_get(s), s->id, cm_now_ms()};
        rc = sch_cron_run(s->cron, &ctx, mono);
        if (s->pg && PQstatus(s->pg) != CONNECTION_OK) pg_result(s, 0);
    }
    return rc;
}

static void sleep_ms(int64_t ms)
{
    struct timespec t = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    if (ms > 0) nanosleep(&t, NULL); /* a signal cuts it short */
}

int sch_main(int argc, char **argv)
{
    struct sched s = {0};
    struct sigaction sa = {0};
    char host[256] = "unknown", rnd[16];
    int rc = 1;

    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: conveyor scheduler\n");
        return 2;
    }
    gethostname(host, sizeof(host) - 1);
    if (cm_random_id(rnd, sizeof(rnd), "", 8) != 0) {
        LOG_ERR("random number generator failed");
        return 1;
    }
    snprintf(s.id, sizeof(s.id), "%s:%d:%s", host, (int)getpid(), rnd);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a write to a Redis that went away must only fail */

    s.q = q_conn_new(cm_cfg.redis_host, cm_cfg.redis_port, cm_cfg.redis_prefix,
                     cm_cfg.redis_timeout_ms);
    s.cron = sch_cron_new();
    if (!s.q || !s.cron) {
        LOG_ERR("out of memory");
        goto out;
    }
    LOG_INFO("scheduler %s started (every %d ms, leader lock %d ms)", s.id,
             cm_cfg.scheduler_interval_ms, cm_cfg.leader_ttl_ms);
    while (!stop_requested) {
        int64_t start = cm_mono_ms(), wait;

        if (tick(&s) == Q_EREDIS) {
            if (!s.redis_backoff_ms) LOG_WARN("Redis unreachable; retrying with backoff");
            s.redis_backoff_ms = next_backoff(s.redis_backoff_ms);
        } else if (s.redis_backoff_ms) {
            LOG_INFO("Redis reachable again");
            s.redis_backoff_ms = 0;
        }
        wait = cm_cfg.scheduler_interval_ms - (cm_mono_ms() - start);
        if (wait < s.redis_backoff_ms) wait = s.redis_backoff_ms;
        if (!stop_requested) sleep_ms(wait);
    }
    /* Hand the lock over at once rather than after its TTL: a 1 ms renewal. */
    if (s.leader) q_leader(s.q, LEADER_DUTY, s.id, 1);
    LOG_INFO("scheduler %s stopped", s.id);
    rc = 0;
out:
    sch_cron_free(s.cron);
    q_conn_free(s.q);
    PQfinish(s.pg);
    return rc;
}
