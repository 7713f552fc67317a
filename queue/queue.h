/* queue/queue.h — the Redis job queue: records, atomic moves (Lua), sync client.
 *
 * Layout (P = configured prefix + ":"; Q = P + "{queue}:"):
 *   P job:<id>         hash: rec (msgpack record), type, queue, owner, priority,
 *                      max_attempts, status, attempt, token, run_at, created, started,
 *                      finished, updated, progress, pmsg, result, error, history, cancel
 *   Q ready            zset: (9 - priority) * 2^40 + sequence  (ZPOPMIN = next job)
 *   Q working          zset: lease expiry ms
 *   Q scheduled        zset: due ms (delayed and waiting-to-retry jobs)
 *   Q dead             zset: time of death
 *   Q marker           zset: a worker blocks on it with BZPOPMIN (wake-up, no polling)
 *   Q stats            hash: counters per final status; Q stats:<minute> the same
 *                      per minute (expires after 2 h)
 *   P done             zset: terminal jobs waiting to be archived to PostgreSQL
 *   P owner:<owner>    zset: the owner's jobs by creation time
 *   P idem:<owner>:<sha256(key)>  "id requesthash" with a TTL
 *   P queues           set of queue names;  P seq  sequence;  P leader:<duty> lock
 *   P ch:done / P ch:cancel   pub/sub channels carrying job ids (done: one message
 *                      may carry several, separated by spaces)
 * Every move between states is one Lua script (queue/lua/), so nothing is lost or
 * done twice when a process dies between two commands. Needs a single Redis primary
 * (with replicas or Sentinel); Cluster would need per-queue job keys.
 *
 * The sync client (q_conn_t) is for one thread at a time: each api thread, the
 * scheduler and the CLI own one. The worker drives the same scripts asynchronously
 * through q_cmd_* (argument vectors) and q_parse_* (replies). */
#ifndef Q_QUEUE_H
#define Q_QUEUE_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define Q_ID_PREFIX "job_"
#define Q_ID_SIZE 32 /* "job_" + 22 base62 + NUL, rounded up */
#define Q_PRIORITY_MIN 0
#define Q_PRIORITY_MAX 9
#define Q_PRIORITY_DEFAULT 5
#define Q_MAX_RECORD (2 * 1024 * 1024) /* largest msgpack record accepted from Redis */
#define Q_NAME_MAX 64                  /* longest queue or type name */

/* Error codes (negative). */
enum {
    Q_OK = 0,
    Q_ENOTFOUND = -1, /* no such job */
    Q_EREDIS = -2,    /* Redis unreachable or answered an error */
    Q_ECORRUPT = -3,  /* a record that cannot be decoded */
    Q_EINVAL = -4,    /* bad argument */
    Q_ENOMEM = -5,
    Q_ECONFLICT = -6, /* state forbids it (see the function) */
};

/* A static description of an error code. */
const char *q_strerror(int err);

/* ---- names ---------------------------------------------------------------------- */

/* 1 if s is a valid queue name: 1-64 of [A-Za-z0-9_.-]. */
int q_valid_queue(const char *s);
/* 1 if s is a valid job type: 1-64 of [a-z0-9_.-]. */
int q_valid_type(const char *s);
/* 1 if s looks like a job id ("job_" + 22 base62). */
int q_valid_id(const char *s);
/* Writes a new random job id into out. Returns 0 or Q_EINVAL (RNG failure). */
int q_new_id(char out[Q_ID_SIZE]);

/* ---- records -------------------------------------------------------------------- */

/* The immutable part of a job, as encoded in msgpack in the "rec" field. Strings are
 * owned by the struct when it comes from q_record_decode (free with q_record_clear). */
typedef struct q_record {
    char *id, *type, *queue, *owner;
    char *input;           /* compact JSON text */
    char *idempotency_key; /* NULL when none */
    int max_attempts, priority, timeout_ms; /* timeout_ms 0: the worker's default */
} q_record_t;

/* Encodes rec into a malloc'd msgpack buffer (*out, *outlen; caller frees).
 * Returns 0 or Q_ENOMEM. */
int q_record_encode(const q_record_t *rec, char **out, size_t *outlen);

/* Decodes buf into rec (zeroed first). The input is checked before any allocation:
 * declared sizes must fit in the bytes left, nesting is bounded, required fields must be
 * present with the right types. Returns 0, or Q_ECORRUPT with a reason in why (size
 * whylen) and nothing to free. */
int q_record_decode(const char *buf, size_t len, q_record_t *rec, char *why, size_t whylen);

/* Frees the strings of rec and zeroes it. */
void q_record_clear(q_record_t *rec);

/* ---- job snapshots -------------------------------------------------------------- */

/* A job as read from Redis (or built from the PostgreSQL archive by the caller).
 * JSON fields are JSON text (NULL when absent). Owned: free with q_job_free. */
typedef struct q_job {
    char id[Q_ID_SIZE];
    char *type, *queue, *owner, *status;
    char *input, *result, *error, *history; /* JSON text */
    char *progress_message, *idempotency_key, *worker;
    int attempt, max_attempts, priority, progress, timeout_ms, cancel_requested;
    int64_t created_ms, run_at_ms, started_ms, finished_ms, updated_ms; /* 0: not set */
} q_job_t;

/* Frees a snapshot; NULL is a no-op. */
void q_job_free(q_job_t *job);

/* 1 for succeeded, failed, dead and canceled. */
int q_status_terminal(const char *status);

/* The public JSON view of a job (camelCase; see API.md). Returns a new reference. */
json_t *q_job_to_json(const q_job_t *job);

/* ---- sync client ---------------------------------------------------------------- */

typedef struct q_conn q_conn_t;

/* Connects to host:port with timeout_ms for connect and every command; prefix is the
 * key prefix without the trailing ':'. Returns NULL if it cannot allocate; a connection
 * that cannot reach Redis yet is returned and reconnects on each use. */
q_conn_t *q_conn_new(const char *host, int port, const char *prefix, int timeout_ms);

/* Closes and frees; NULL is a no-op. */
void q_conn_free(q_conn_t *c);

/* The hiredis context, connecting first if needed; NULL while Redis is unreachable.
 * Borrowed: valid until the next q_* call on c. */
redisContext *q_conn_redis(q_conn_t *c);

/* Sends AUTH on a new connection when CONVEYOR_REDIS_URL carries a password (q_conn_redis
 * does it). Returns 0, or -1 with the reason in rc->errstr (never the password). */
int q_redis_auth(redisContext *rc);

/* The AUTH command for CONVEYOR_REDIS_URL's password into argv: its argc, 0 when there is
 * no password (for clients that send it themselves, such as the worker's async ones). */
int q_redis_auth_argv(const char *argv[3]);

/* "cv:" — the prefix with its colon. Borrowed. */
const char *q_conn_prefix(const q_conn_t *c);

/* Sends one command (printf-like, hiredis format) and returns its reply (caller frees
 * with freeReplyObject), or NULL after dropping the connection (it reconnects next use). */
redisReply *q_command(q_conn_t *c, const char *fmt, ...);

/* Runs a script of another module: EVALSHA sha nkeys args... (argc strings, borrowed),
 * falling back to EVAL src when Redis does not know it yet; a connection Redis closed
 * meanwhile is retried once, as q_command does (the script must be safe to repeat).
 * Returns the reply (an error reply included; caller frees) or NULL. */
redisReply *q_eval(q_conn_t *c, const char *sha, const char *src, int nkeys, int argc,
                   const char *const *args);

/* 1 if PING answers. */
int q_ping(q_conn_t *c);

typedef struct q_new_job {
    const char *id;    /* NULL: a new random id (set to restore an archived job) */
    const char *type;  /* required */
    const char *queue; /* NULL: "default" */
    const char *owner; /* required */
    const char *input; /* compact JSON text; NULL: "{}" */
    int max_attempts;  /* <= 0: the configured default */
    int priority;      /* 0-9, higher runs first; use Q_PRIORITY_DEFAULT */
    int timeout_ms;    /* 0: the worker's default */
    int64_t run_at_ms; /* 0 or past: now */
    const char *idempotency_key; /* NULL: none */
    const char *request_hash;    /* sha256 hex of the request: with idempotency_key, the
                                    key is registered; NULL: only recorded (restores) */
    int64_t idempotency_ttl_ms;  /* 0: a day */
    int64_t created_ms;          /* 0: now (a job restored from the archive keeps its own) */
    const char *history;         /* attempts history JSON to keep (restores), or NULL */
} q_new_job_t;

enum { Q_ENQ_CREATED = 0, Q_ENQ_EXISTING = 1, Q_ENQ_CONFLICT = 2 };

/* Enqueues a job. On 0, id_out holds the job's id and *outcome is Q_ENQ_CREATED (then
 * *created_ms, unless NULL, is its creation time by Redis's clock), or Q_ENQ_EXISTING
 * (same idempotency key and request: the earlier job; or job->id names a job Redis
 * holds already, which is left untouched), or Q_ENQ_CONFLICT (same key,
 * different request: id_out is the earlier job). Returns 0, Q_EINVAL, Q_ENOMEM or
 * Q_EREDIS. */
int q_enqueue(q_conn_t *c, const q_new_job_t *job, char id_out[Q_ID_SIZE], int *outcome,
              int64_t *created_ms);

/* The outcome of one job of q_enqueue_many: rc as q_enqueue returns it, and when 0 the
 * rest as q_enqueue gives it. */
typedef struct q_enq_result {
    int rc;
    int outcome;
    char id[Q_ID_SIZE];
    int64_t created_ms;
} q_enq_result_t;

/* Enqueues n jobs in one script call, each as q_enqueue would, in order (a job sees the
 * ones before it: two with one idempotency key make one job). res[i] is the i-th job's
 * outcome; a job that is not valid gets Q_EINVAL and the others still go. Returns 0, or
 * Q_ENOMEM / Q_EREDIS when the call as a whole failed (every valid job's rc says so). */
int q_enqueue_many(q_conn_t *c, const q_new_job_t *const *jobs, int n, q_enq_result_t *res);

/* Group commit of enqueues (queue/batch.c): any number of threads hand jobs to a few
 * sender threads, each with a Redis connection of its own, which send whatever gathered
 * while their previous call ran as one q_enqueue_many call (at most Q_BATCH_MAX jobs).
 * Nothing waits for a batch to fill: a lone job goes at once. Saves Redis a round trip,
 * a script set-up and two system calls per job under concurrent load. */
#define Q_BATCH_MAX 256
typedef struct q_batcher q_batcher_t;

/* Starts the sender threads; each connects at once (and again on use while Redis is
 * down). NULL on failure. */
q_batcher_t *q_batcher_new(const char *host, int port, const char *prefix, int timeout_ms);

/* Sends what is still handed in, then stops the threads. No call may be running or
 * follow. NULL is a no-op. */
void q_batcher_free(q_batcher_t *b);

/* q_enqueue through the batcher: blocks until the job's call is answered. job and what
 * it points to must stay valid until then (they are read by the batcher's thread). */
int q_batcher_enqueue(q_batcher_t *b, const q_new_job_t *job, char id_out[Q_ID_SIZE],
                      int *outcome, int64_t *created_ms);

/* The same without waiting: done(arg, res) runs on a sender thread once the job's call
 * is answered (res as q_enqueue_many gives it; res->rc != 0: not enqueued). job and what
 * it points to must stay valid until done runs; done must not block for long (the
 * batch behind it waits). Returns 0, or Q_ENOMEM (done will not run). */
typedef void (*q_enq_done_fn)(void *arg, const q_enq_result_t *res);
int q_batcher_submit(q_batcher_t *b, const q_new_job_t *job, q_enq_done_fn done, void *arg);

/* Reads a job. Returns 0 with *out (caller frees), Q_ENOTFOUND, Q_EREDIS, or Q_ECORRUPT
 * (the hash exists but its record does not decode: *out is still set, without input). */
int q_job_get(q_conn_t *c, const char *id, q_job_t **out);

/* Reads n jobs in one round trip; out[i] is NULL for a job not in Redis. Returns 0, or
 * Q_EREDIS / Q_ENOMEM with every out[i] NULL. Caller frees each out[i]. */
int q_job_get_many(q_conn_t *c, const char *const *ids, int n, q_job_t **out);

/* Cancels a job. *result: "canceled" or "cancel_requested" (running: its worker is
 * told). Returns 0, Q_ENOTFOUND, Q_ECONFLICT (already terminal; *result is its status),
 * Q_EREDIS. result is a buffer of at least 32 bytes. */
int q_cancel(q_conn_t *c, const char *id, char *result);

/* Re-queues a dead or failed job with fresh attempts. Returns 0, Q_ENOTFOUND (not in
 * Redis), Q_ECONFLICT (*status_out gets its status, >= 32 bytes), Q_EREDIS. */
int q_retry(q_conn_t *c, const char *id, char *status_out);

/* The owner's jobs created at or before before_ms (0: now) newest first (at one time,
 * greater ids first), after the cursor (before_ms, before_id): the cursor's job and those
 * listed before it are skipped. Writes up to max ids into ids (each Q_ID_SIZE) and their
 * creation times into created_ms. Returns the count (under max only where the index
 * ends) or Q_EREDIS. */
int q_owner_page(q_conn_t *c, const char *owner, int64_t before_ms, const char *before_id,
                 int max, char (*ids)[Q_ID_SIZE], int64_t *created_ms);

/* Queue names known to Redis (malloc'd array of malloc'd strings, *n entries; free with
 * q_names_free). Returns 0 or Q_EREDIS. */
int q_queue_names(q_conn_t *c, char ***names, int *n);
void q_names_free(char **names, int n);

/* Per-queue figures: {"name","ready","running","scheduled","dead","processed",
 * "failed","retried","canceled","perMinute":{"succeeded","failed"}} for every queue.
 * Returns 0 with *out (new reference) or Q_EREDIS. */
int q_queue_stats(q_conn_t *c, json_t **out);

/* ---- scheduler duties (sync) ---------------------------------------------------- */

/* Takes or renews the lock of a duty for candidate for ttl_ms. Returns 1 if held, 0 if
 * another holds it, Q_EREDIS. */
int q_leader(q_conn_t *c, const char *duty, const char *candidate, int ttl_ms);

/* Moves up to limit due scheduled jobs of queue to ready. Returns the count or Q_EREDIS. */
int q_promote(q_conn_t *c, const char *queue, int limit);

/* Re-queues (or buries) up to limit jobs of queue whose lease expired. Returns the count
 * or Q_EREDIS. */
int q_reclaim(q_conn_t *c, const char *queue, int limit);

/* Reads up to limit jobs waiting to be archived (oldest first). *jobs is a malloc'd
 * array of *n snapshots (free each and the array). Jobs whose hash vanished are dropped
 * from the set. Returns 0 or Q_EREDIS. */
int q_done_batch(q_conn_t *c, int limit, q_job_t ***jobs, int *n);

/* Marks archived jobs: unchanged ones leave the "done" set and expire after the
 * retention (failed/dead: dead_retention). Returns the count or Q_EREDIS. */
int q_mark_archived(q_conn_t *c, q_job_t *const *jobs, int n, int64_t retention_ms,
                    int64_t dead_retention_ms);

/* Drops index entries older than cutoff_ms whose job expired: every owner index and
 * every queue's dead set. Returns the number removed or Q_EREDIS. */
int q_sweep(q_conn_t *c, int64_t cutoff_ms);

/* ---- async side: argument vectors and reply parsers for the worker -------------- */

/* An argument vector for redisAsyncCommandArgv / redisCommandArgv. Owned; q_argv_free. */
typedef struct q_argv {
    int argc, cap;
    char **argv;
    size_t *len;
} q_argv_t;

void q_argv_free(q_argv_t *a);

/* Rewrites an EVALSHA vector into EVAL with the script's source (after NOSCRIPT).
 * Returns 0 or Q_ENOMEM / Q_EINVAL. */
int q_argv_to_eval(q_argv_t *a);

/* 1 if reply is a NOSCRIPT error. */
int q_reply_noscript(const redisReply *r);

/* Each returns a new vector (NULL on OOM). prefix is "cv:" (q_conn_prefix form). */
q_argv_t *q_cmd_fetch(const char *prefix, const char *queue, int n, int lease_ms,
                      const char *worker_id);
/* outcome: "succeeded" (payload = result JSON) | "retry" | "failed" | "dead" |
 * "canceled" (payload = error JSON {code,message,retryable}); delay_ms for "retry". */
q_argv_t *q_cmd_finish(const char *prefix, const char *queue, const char *id, long long token,
                       const char *outcome, const char *payload, int64_t delay_ms);
/* Merges the leading one-job finish vectors of cmds (from q_cmd_finish, for the queue of
 * cmds[0]) into one call. Returns how many lead the array in that way; when 2 or more,
 * *out is the merged vector (new; NULL if it could not be built: then 1 is returned). */
int q_cmd_finish_merge(q_argv_t *const *cmds, int n, q_argv_t **out);
/* The status a finish reply gives the i-th job of its call ("succeeded", "scheduled",
 * "failed", "dead", "canceled", or "stale" when the lease was reclaimed), or NULL if
 * the reply is not a finish reply. Borrowed from r. */
const char *q_finish_status(const redisReply *r, int i);
q_argv_t *q_cmd_progress(const char *prefix, const char *id, long long token, int percent,
                         const char *message);
q_argv_t *q_cmd_heartbeat(const char *prefix, const char *queue, int lease_ms, int n,
                          const char *const *ids, const long long *tokens);
q_argv_t *q_cmd_release(const char *prefix, const char *queue, const char *id,
                        long long token);
/* BZPOPMIN on the markers of the given queues with a timeout in seconds. */
q_argv_t *q_cmd_wait(const char *prefix, const char *const *queues, int nqueues,
                     double timeout_s);

/* One fetched job: owned strings; free with q_fetched_free. */
typedef struct q_fetched {
    char id[Q_ID_SIZE];
    long long token;
    int attempt;
    char *rec; /* raw record bytes (may be corrupt: decode with q_record_decode) */
    size_t reclen;
} q_fetched_t;

/* Parses a fetch reply into a malloc'd array (*out, *n). Returns 0, Q_EREDIS (error
 * reply) or Q_ENOMEM. */
int q_parse_fetch(const redisReply *r, q_fetched_t **out, int *n);
void q_fetched_free(q_fetched_t *f, int n);

/* Parses a heartbeat reply: calls on_lost / on_cancel for each id. Returns 0 or
 * Q_EREDIS. */
int q_parse_heartbeat(const redisReply *r, void (*on_lost)(void *, const char *),
                      void (*on_cancel)(void *, const char *), void *ctx);

/* The key of a job's hash, "<prefix>job:<id>", into out (size outlen); with id "" the
 * prefix every job key starts with. prefix is "cv:" (q_conn_prefix form). */
void q_key_job(char *out, size_t outlen, const char *prefix, const char *id);

/* The channel names ("cv:ch:done", "cv:ch:cancel") into out (size outlen). */
void q_channel_done(const char *prefix, char *out, size_t outlen);
void q_channel_cancel(const char *prefix, char *out, size_t outlen);

/* Default retry delay in ms after attempt (1-based): (attempt^4 + 15 +
 * rand(10 * (attempt + 1))) s, times scale. */
int64_t q_backoff_ms(int attempt, double scale);

#endif
