/* queue/batch.c — group commit of enqueues (q_batcher_*, see queue.h).
 *
 * Callers queue a request on their stack and sleep on its semaphore, or queue one on
 * the heap with a function to call (q_batcher_submit); a sender thread takes every
 * request waiting, sends them as q_enqueue_many calls (up to Q_BATCH_MAX jobs each) on
 * its own connection, and wakes each caller with its outcome (a semaphore each: a
 * caller may return as soon as it is posted) or calls its function. While one call
 * runs, the next batch gathers, so the batch grows with the load and a lone request
 * goes at once.
 *
 * Requests are pushed on a lock-free stack and a sender takes the whole stack in one
 * exchange: with dozens of request threads on two cores, a mutex there was contended,
 * and every contended lock put a thread to sleep. A sender sleeps only when there is
 * nothing to take; a caller wakes one only then. There are SENDERS threads: with one,
 * Redis idled whenever the scheduler set that thread aside. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

/* One caller's job: on its stack while it waits (done NULL), or on the heap, owned by
 * the batcher, until done has run. */
struct request {
    const q_new_job_t *job;
    q_enq_result_t res;
    sem_t answered;
    q_enq_done_fn done;
    void *arg;
    struct request *next;
};

#define SENDERS 2 /* threads, each with a connection: one descheduled stalls nothing */

struct sender {
    q_batcher_t *b;
    pthread_t thread;
    q_conn_t *c;
    int started;
};

struct q_batcher {
    _Atomic(struct request *) waiting; /* pushed requests, newest first */
    atomic_int sleepers;               /* senders asleep, or about to be */
    atomic_int woken;                  /* a wake-up is posted and not yet taken */
    atomic_int stopping;
    sem_t wake;
    struct sender senders[SENDERS];
};

/* Sends reqs[0..n) as one call and answers each. */
static void send_batch(struct sender *sd, struct request **reqs, int n)
{
    const q_new_job_t *jobs[Q_BATCH_MAX];
    q_enq_result_t res[Q_BATCH_MAX];

    for (int i = 0; i < n; i++) jobs[i] = reqs[i]->job;
    q_enqueue_many(sd->c, jobs, n, res); /* each res[i].rc tells */
    for (int i = 0; i < n; i++) {
        if (reqs[i]->done) {
            reqs[i]->done(reqs[i]->arg, &res[i]);
            free(reqs[i]);
            continue;
        }
        reqs[i]->res = res[i];
        sem_post(&reqs[i]->answered); /* reqs[i] may be gone from here on */
    }
}

/* Sleeps until requests may be waiting (or stopping). */
static void doze(q_batcher_t *b)
{
    atomic_fetch_add(&b->sleepers, 1);
    /* a push after this check sees the sleeper and posts */
    if (!atomic_load(&b->waiting) && !atomic_load(&b->stopping))
        while (sem_wait(&b->wake) != 0 && errno == EINTR) {}
    atomic_fetch_sub(&b->sleepers, 1);
    atomic_store(&b->woken, 0);
}

static void *run(void *arg)
{
    struct sender *sd = arg;
    q_batcher_t *b = sd->b;
    pthread_setname_np(pthread_self(), "enqueue"); /* as top and perf show it */
    (void)q_conn_redis(sd->c); /* connected before the load comes (see api/server.c) */
    struct request *reqs[Q_BATCH_MAX];

    for (;;) {
        struct request *stack = atomic_exchange(&b->waiting, NULL), *fifo = NULL;
        if (!stack) {
            if (atomic_load(&b->stopping)) break; /* and nothing left */
            doze(b);
            continue;
        }
        while (stack) { /* oldest first */
            struct request *next = stack->next;
            stack->next = fifo;
            fifo = stack;
            stack = next;
        }
        while (fifo) {
            int n = 0;
            for (; fifo && n < Q_BATCH_MAX; fifo = fifo->next) reqs[n++] = fifo;
            send_batch(sd, reqs, n);
        }
    }
    return NULL;
}

q_batcher_t *q_batcher_new(const char *host, int port, const char *prefix, int timeout_ms)
{
    q_batcher_t *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    if (sem_init(&b->wake, 0, 0) != 0) {
        free(b);
        return NULL;
    }
    for (int i = 0; i < SENDERS; i++) {
        struct sender *sd = &b->senders[i];
        sd->b = b;
        if (!(sd->c = q_conn_new(host, port, prefix, timeout_ms)) ||
            pthread_create(&sd->thread, NULL, run, sd) != 0) {
            q_batcher_free(b);
            return NULL;
        }
        sd->started = 1;
    }
    return b;
}

void q_batcher_free(q_batcher_t *b)
{
    if (!b) return;
    atomic_store(&b->stopping, 1);
    for (int i = 0; i < SENDERS; i++) sem_post(&b->wake); /* each wakes, sends, stops */
    for (int i = 0; i < SENDERS; i++) {
        if (b->senders[i].started) pthread_join(b->senders[i].thread, NULL);
        q_conn_free(b->senders[i].c);
    }
    sem_destroy(&b->wake);
    free(b);
}

/* Queues req for the senders, and wakes one if they all sleep. */
static void hand_in(q_batcher_t *b, struct request *req)
{
    struct request *top = atomic_load(&b->waiting);
    do
        req->next = top;
    while (!atomic_compare_exchange_weak(&b->waiting, &top, req));
    if (atomic_load(&b->sleepers) > 0 && !atomic_exchange(&b->woken, 1)) sem_post(&b->wake);
}

int q_batcher_submit(q_batcher_t *b, const q_new_job_t *job, q_enq_done_fn done, void *arg)
{
    struct request *req = calloc(1, sizeof(*req));
    if (!req) return Q_ENOMEM;
    req->job = job;
    req->done = done;
    req->arg = arg;
    hand_in(b, req);
    return 0;
}

int q_batcher_enqueue(q_batcher_t *b, const q_new_job_t *job, char id_out[Q_ID_SIZE],
                      int *outcome, int64_t *created_ms)
{
    struct request req = {.job = job};

    if (sem_init(&req.answered, 0, 0) != 0) return Q_ENOMEM;
    hand_in(b, &req);
    while (sem_wait(&req.answered) != 0 && errno == EINTR) {
    }
    sem_destroy(&req.answered);
    if (req.res.rc != 0) return req.res.rc;
    memcpy(id_out, req.res.id, Q_ID_SIZE);
    *outcome = req.res.outcome;
    if (created_ms && req.res.outcome == Q_ENQ_CREATED) *created_ms = req.res.created_ms;
    return 0;
}
