/* queue/batch.c — group commit of enqueues (q_batcher_*, see queue.h).
 *
 * Callers queue a request on their stack and sleep on its semaphore, or queue one on
 * the heap with a function to call (q_batcher_submit); a sender thread takes every
 * request waiting (up to Q_BATCH_MAX), sends them as one q_enqueue_many call on its own
 * connection, and wakes each caller with its outcome (a semaphore each: no lock is held
 * while they wake, and a caller may return as soon as it is posted) or calls its
 * function.
 * While one call runs, the next batch gathers, so the batch grows with the load and a
 * lone request goes at once. There are SENDERS threads: with one, Redis idled whenever
 * the scheduler set that thread aside among the request threads. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
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
    pthread_mutex_t mu;
    pthread_cond_t more; /* requests came in, or stopping */
    struct request *head, **tail;
    int stopping;
    struct sender senders[SENDERS];
};

/* Takes up to Q_BATCH_MAX waiting requests into reqs (mu held). Returns how many. */
static int take(q_batcher_t *b, struct request **reqs)
{
    int n = 0;
    while (b->head && n < Q_BATCH_MAX) {
        reqs[n++] = b->head;
        b->head = b->head->next;
    }
    if (!b->head) b->tail = &b->head;
    return n;
}

static void *run(void *arg)
{
    struct sender *sd = arg;
    q_batcher_t *b = sd->b;
    pthread_setname_np(pthread_self(), "enqueue"); /* as top and perf show it */
    (void)q_conn_redis(sd->c); /* connected before the load comes (see api/server.c) */
    struct request *reqs[Q_BATCH_MAX];
    const q_new_job_t *jobs[Q_BATCH_MAX];
    q_enq_result_t res[Q_BATCH_MAX];

    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stopping) pthread_cond_wait(&b->more, &b->mu);
        int n = take(b, reqs);
        if (n == 0) break; /* stopping, and nothing left */
        pthread_mutex_unlock(&b->mu);
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
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

q_batcher_t *q_batcher_new(const char *host, int port, const char *prefix, int timeout_ms)
{
    q_batcher_t *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    b->tail = &b->head;
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b);
        return NULL;
    }
    if (pthread_cond_init(&b->more, NULL) != 0) {
        pthread_mutex_destroy(&b->mu);
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
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_broadcast(&b->more);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < SENDERS; i++) {
        if (b->senders[i].started) pthread_join(b->senders[i].thread, NULL);
        q_conn_free(b->senders[i].c);
    }
    pthread_cond_destroy(&b->more);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* Queues req for the senders. */
static void hand_in(q_batcher_t *b, struct request *req)
{
    pthread_mutex_lock(&b->mu);
    *b->tail = req;
    b->tail = &req->next;
    pthread_cond_signal(&b->more);
    pthread_mutex_unlock(&b->mu);
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
