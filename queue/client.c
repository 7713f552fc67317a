/* queue/client.c — the synchronous client: one connection, one thread. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "common/config.h"
#include "common/log.h"
#include "common/util.h"
#include "queue/queue.h"
#include "queue/scripts.h"

struct q_conn {
    redisContext *rc;
    char *host;
    int port, timeout_ms;
    char prefix[96];     /* "cv:" */
    int64_t retry_after; /* monotonic ms before which no reconnect is tried */
    int backoff_ms;
    /* buffers of the enqueue request, kept from call to call (body, arguments, command):
     * freeing and growing them again made the allocator map and unmap memory per call */
    char *scratch[3];
    size_t scratch_cap[3];
};

q_conn_t *q_conn_new(const char *host, int port, const char *prefix, int timeout_ms)
{
    q_conn_t *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->host = strdup(host);
    if (!c->host || strlen(prefix) + 2 > sizeof(c->prefix)) {
        free(c->host);
        free(c);
        return NULL;
    }
    snprintf(c->prefix, sizeof(c->prefix), "%s:", prefix);
    c->port = port;
    c->timeout_ms = timeout_ms;
    return c;
}

void q_conn_free(q_conn_t *c)
{
    if (!c) return;
    if (c->rc) redisFree(c->rc);
    for (int i = 0; i < 3; i++) free(c->scratch[i]);
    free(c->host);
    free(c);
}

const char *q_conn_prefix(const q_conn_t *c) { return c->prefix; }

static void drop(q_conn_t *c)
{
    if (c->rc) redisFree(c->rc);
    c->rc = NULL;
}

int q_redis_auth_argv(const char *argv[3])
{
    int n = 0;
    if (!cm_cfg.redis_password[0]) return 0;
    argv[n++] = "AUTH";
    if (cm_cfg.redis_user[0]) argv[n++] = cm_cfg.redis_user;
    argv[n++] = cm_cfg.redis_password;
    return n;
}

int q_redis_auth(redisContext *rc)
{
    const char *argv[3];
    int argc = q_redis_auth_argv(argv), ok;
    redisReply *r;

    if (argc == 0) return 0;
    r = redisCommandArgv(rc, argc, argv, NULL);
    ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok && r && r->type == REDIS_REPLY_ERROR)
        snprintf(rc->errstr, sizeof(rc->errstr), "AUTH refused: %.100s", r->str);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

redisContext *q_conn_redis(q_conn_t *c)
{
    struct timeval tv = {c->timeout_ms / 1000, (c->timeout_ms % 1000) * 1000};
    if (c->rc) return c->rc;
    if (cm_mono_ms() < c->retry_after) return NULL;
    c->rc = redisConnectWithTimeout(c->host, c->port, tv);
    if (!c->rc || c->rc->err || redisSetTimeout(c->rc, tv) != REDIS_OK ||
        q_redis_auth(c->rc) != 0) {
        LOG_WARN("redis %s:%d unreachable: %s", c->host, c->port,
                 c->rc ? c->rc->errstr : "out of memory");
        drop(c);
        /* back off from 50 ms to 2 s so a down Redis does not cost a connect per call */
        c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 50;
        if (c->backoff_ms > 2000) c->backoff_ms = 2000;
        c->retry_after = cm_mono_ms() + c->backoff_ms;
        return NULL;
    }
    c->backoff_ms = 0;
    return c->rc;
}

/* Drops the connection if the reply is NULL (I/O error or timeout). */
static redisReply *checked(q_conn_t *c, void *r)
{
    if (!r) {
        LOG_WARN("redis command failed: %s", c->rc ? c->rc->errstr : "not connected");
        drop(c);
    }
    return r;
}

redisReply *q_command(q_conn_t *c, const char *fmt, ...)
{
    va_list ap;
    void *r = NULL;
    /* A connection Redis closed meanwhile (restart, idle timeout, CLIENT KILL) fails at
     * once; the commands sent here are reads or idempotent, so try once more on a new
     * connection rather than fail the caller's request. */
    for (int attempt = 0; attempt < 2 && !r; attempt++) {
        int had = c->rc != NULL;
        redisContext *rc = q_conn_redis(c);
        if (!rc) return NULL;
        va_start(ap, fmt);
        r = redisvCommand(rc, fmt, ap);
        va_end(ap);
        if (!r && had && (rc->err == REDIS_ERR_EOF || rc->err == REDIS_ERR_IO)) {
            drop(c);
            continue;
        }
        return checked(c, r);
    }
    return r;
}

redisReply *q_eval(q_conn_t *c, const char *sha, const char *src, int nkeys, int argc,
                   const char *const *args)
{
    const char *argv[16];
    char nk[16];
    redisReply *r = NULL;

    if (argc < 0 || argc > 12) return NULL;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[0] = "EVALSHA";
    argv[1] = sha;
    argv[2] = nk;
    memcpy(argv + 3, args, (size_t)argc * sizeof(*args));
    for (int attempt = 0; attempt < 3 && !r; attempt++) {
        int had = c->rc != NULL;
        redisContext *rc = q_conn_redis(c);
        if (!rc) return NULL;
        r = redisCommandArgv(rc, argc + 3, argv, NULL);
        if (!r && had && (rc->err == REDIS_ERR_EOF || rc->err == REDIS_ERR_IO)) {
            drop(c);
            continue;
        }
        r = checked(c, r);
        if (q_reply_noscript(r)) { /* a restarted or flushed Redis: send the text */
            freeReplyObject(r);
            r = NULL;
            argv[0] = "EVAL";
            argv[1] = src;
        }
    }
    return r;
}

int q_ping(q_conn_t *c)
{
    redisReply *r = q_command(c, "PING");
    int ok = r && r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return ok;
}

/* Whether Redis has closed an idle connection (restart, timeout, CLIENT KILL): it reads
 * as end of file, or holds bytes no command asked for. One non-blocking peek. */
static int closed_meanwhile(const redisContext *rc)
{
    char b;
    ssize_t n = recv(rc->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Runs a script vector (EVALSHA, falling back to EVAL). Takes a. Returns the reply or
 * NULL; an error reply is logged and freed (NULL). The scripts sent here are not all
 * safe to send twice, so a command that failed is not retried; a connection Redis
 * closed before it was sent is replaced first. */
static redisReply *run(q_conn_t *c, q_argv_t *a)
{
    redisReply *r = NULL;
    redisContext *rc;
    if (!a) return NULL;
    if ((rc = c->rc) && closed_meanwhile(rc)) drop(c);
    if (!(rc = q_conn_redis(c))) goto out;
    r = checked(c, redisCommandArgv(rc, a->argc, (const char **)a->argv, a->len));
    if (q_reply_noscript(r) && q_argv_to_eval(a) == 0) {
        freeReplyObject(r);
        r = NULL;
        if ((rc = q_conn_redis(c)))
            r = checked(c, redisCommandArgv(rc, a->argc, (const char **)a->argv, a->len));
    }
    if (r && r->type == REDIS_REPLY_ERROR) {
        LOG_ERR("redis script error: %s", r->str);
        freeReplyObject(r);
        r = NULL;
    }
out:
    q_argv_free(a);
    return r;
}

/* Builds a script vector: nk keys then the other arguments, n in all, with explicit
 * lengths (binary-safe). NULL on OOM. */
static q_argv_t *script_bin(enum q_script_id id, int nk, int n, const char *const *v,
                            const size_t *len)
{
    q_argv_t *a = q_argv_script(id, nk, 3 + n);
    for (int i = 0; a && i < n; i++) {
        if (q_argv_add(a, v[i], len[i]) != 0) {
            q_argv_free(a);
            a = NULL;
        }
    }
    return a;
}

/* The same from NULL-terminated lists of keys and of arguments (C strings). */
static q_argv_t *script(enum q_script_id id, const char *const *keys, const char *const *args)
{
    const char *v[32];
    size_t len[32];
    int nk = 0, n = 0;
    for (; keys[nk]; nk++, n++) {
        if (n == 32) return NULL;
        v[n] = keys[nk];
    }
    for (int i = 0; args[i]; i++) {
        if (n == 32) return NULL;
        v[n++] = args[i];
    }
    for (int i = 0; i < n; i++) len[i] = strlen(v[i]);
    return script_bin(id, nk, n, v, len);
}

/* ---- enqueue -------------------------------------------------------------------- */

/* The enqueue script's request is built here as Redis protocol in one buffer: every
 * POST /v1/jobs goes through it, and argument vectors (a copy per argument), snprintf
 * per key and hiredis's formatting were most of the api's own work per request. */

/* A growing buffer of protocol arguments ("$<len>\r\n<bytes>\r\n" each). */
typedef struct resp {
    char *buf;
    size_t len, cap;
    int argc, failed;
} resp_t;

#define SCRATCH_KEEP (1 << 20) /* a larger buffer (huge inputs) is not kept */

/* An empty buffer made of c's scratch buffer i. */
static resp_t resp_take(q_conn_t *c, int i)
{
    resp_t r = {.buf = c->scratch[i], .cap = c->scratch_cap[i]};
    c->scratch[i] = NULL;
    c->scratch_cap[i] = 0;
    return r;
}

/* Gives r's memory back to c as its scratch buffer i (or frees it). */
static void resp_give(q_conn_t *c, int i, resp_t *r)
{
    if (r->cap > SCRATCH_KEEP) {
        free(r->buf);
    } else {
        free(c->scratch[i]);
        c->scratch[i] = r->buf;
        c->scratch_cap[i] = r->cap;
    }
    r->buf = NULL;
    r->cap = 0;
}

/* Room for n more bytes. 0 or -1 (failed is then set). */
static int resp_room(resp_t *r, size_t n)
{
    if (r->failed) return -1;
    if (r->len + n <= r->cap) return 0;
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < r->len + n) cap *= 2;
    char *b = realloc(r->buf, cap);
    if (!b) {
        r->failed = 1;
        return -1;
    }
    r->buf = b;
    r->cap = cap;
    return 0;
}

/* Writes v in decimal at p (room for 20 characters). Returns the length. */
static size_t put_ll(char *p, long long v)
{
    char tmp[24];
    size_t n = 0, i = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10) > 0);
    if (v < 0) p[i++] = '-';
    while (n > 0) p[i++] = tmp[--n];
    return i;
}

/* Appends one argument made of the n strings parts[i] (lens[i] bytes each). */
static void resp_parts(resp_t *r, int n, const char *const *parts, const size_t *lens)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) total += lens[i];
    if (resp_room(r, total + 32) != 0) return;
    r->buf[r->len++] = '$';
    r->len += put_ll(r->buf + r->len, (long long)total);
    memcpy(r->buf + r->len, "\r\n", 2);
    r->len += 2;
    for (int i = 0; i < n; i++) {
        memcpy(r->buf + r->len, parts[i], lens[i]);
        r->len += lens[i];
    }
    memcpy(r->buf + r->len, "\r\n", 2);
    r->len += 2;
    r->argc++;
}

static void resp_arg(resp_t *r, const char *s, size_t len) { resp_parts(r, 1, &s, &len); }

static void resp_str(resp_t *r, const char *s) { resp_arg(r, s, strlen(s)); }

static void resp_ll(resp_t *r, long long v)
{
    char num[24];
    resp_arg(r, num, put_ll(num, v));
}

/* Appends the key prefix + a + b + c (b and c may be ""). */
static void resp_key(resp_t *r, const char *prefix, const char *a, const char *b, const char *c)
{
    const char *parts[] = {prefix, a, b, c};
    size_t lens[] = {strlen(prefix), strlen(a), strlen(b), strlen(c)};
    resp_parts(r, 4, parts, lens);
}

/* Sends "EVALSHA <sha> <nkeys>" followed by the arguments in body (argc of them), or
 * EVAL with the source after NOSCRIPT; as run() does otherwise. Returns the reply or
 * NULL (an error reply is logged and freed). */
static redisReply *run_resp(q_conn_t *c, enum q_script_id id, int nkeys, const resp_t *body)
{
    resp_t cmd = resp_take(c, 2);
    redisReply *r = NULL;
    redisContext *rc;

    if (body->failed) return NULL;
    for (int eval = 0; eval < 2; eval++) {
        cmd.len = 0;
        cmd.argc = 0;
        if (resp_room(&cmd, 64) != 0) break;
        cmd.buf[cmd.len++] = '*';
        cmd.len += put_ll(cmd.buf + cmd.len, 3 + (long long)body->argc);
        memcpy(cmd.buf + cmd.len, "\r\n", 2);
        cmd.len += 2;
        resp_str(&cmd, eval ? "EVAL" : "EVALSHA");
        resp_str(&cmd, eval ? q_script_src(id) : q_script_sha(id));
        resp_ll(&cmd, nkeys);
        if (resp_room(&cmd, body->len) != 0) break;
        memcpy(cmd.buf + cmd.len, body->buf, body->len);
        cmd.len += body->len;
        if ((rc = c->rc) && closed_meanwhile(rc)) drop(c);
        if (!(rc = q_conn_redis(c))) break;
        void *reply = NULL;
        if (redisAppendFormattedCommand(rc, cmd.buf, cmd.len) != REDIS_OK ||
            redisGetReply(rc, &reply) != REDIS_OK)
            reply = NULL;
        if (!(r = checked(c, reply))) break;
        if (!q_reply_noscript(r)) break;
        freeReplyObject(r); /* Redis restarted, or its scripts were flushed */
        r = NULL;
    }
    resp_give(c, 2, &cmd);
    if (r && r->type == REDIS_REPLY_ERROR) {
        LOG_ERR("redis script error: %s", r->str);
        freeReplyObject(r);
        r = NULL;
    }
    return r;
}

enum { ENQ_KEYS = 8 }; /* per job (and 12 arguments): see enqueue.lua */

/* One job, checked and encoded: what the script's keys and arguments are made of. */
struct enq {
    char id[Q_ID_SIZE], idem_hash[65];
    const char *queue;
    char *packed;
    size_t packed_len;
    int max_attempts, register_key;
};

/* Checks job and fills e (e->packed is then owned: free it). Returns 0, Q_EINVAL or
 * Q_ENOMEM. */
static int enq_prepare(const q_new_job_t *job, struct enq *e)
{
    const char *queue = job->queue ? job->queue : "default";
    q_record_t rec = {0};

    e->packed = NULL;
    if (!job->type || !job->owner || !q_valid_type(job->type) || !q_valid_queue(queue) ||
        job->priority < Q_PRIORITY_MIN || job->priority > Q_PRIORITY_MAX ||
        strlen(job->owner) > 200)
        return Q_EINVAL;
    e->queue = queue;
    e->register_key = job->idempotency_key && job->request_hash;
    if (job->id) {
        if (!q_valid_id(job->id)) return Q_EINVAL;
        snprintf(e->id, sizeof(e->id), "%s", job->id);
    } else if (q_new_id(e->id) != 0) {
        return Q_EINVAL;
    }
    rec.id = e->id;
    rec.type = (char *)job->type;
    rec.queue = (char *)queue;
    rec.owner = (char *)job->owner;
    rec.input = (char *)(job->input ? job->input : "{}");
    rec.idempotency_key = (char *)job->idempotency_key;
    rec.max_attempts = job->max_attempts > 0 ? job->max_attempts : cm_cfg.max_attempts;
    rec.priority = job->priority;
    rec.timeout_ms = job->timeout_ms > 0 ? job->timeout_ms : 0;
    e->max_attempts = rec.max_attempts;
    if (e->register_key)
        cm_sha256_hex(job->idempotency_key, strlen(job->idempotency_key), e->idem_hash);
    if (q_record_encode(&rec, &e->packed, &e->packed_len) != 0) return Q_ENOMEM;
    return 0;
}

/* The job's 8 keys (see enqueue.lua). */
static void enq_keys(resp_t *r, const char *p, const q_new_job_t *job, const struct enq *e)
{
    resp_key(r, p, "job:", e->id, "");
    resp_key(r, p, "{", e->queue, "}:ready");
    resp_key(r, p, "{", e->queue, "}:scheduled");
    resp_key(r, p, "{", e->queue, "}:marker");
    resp_key(r, p, "owner:", job->owner, "");
    if (e->register_key) {
        const char *parts[] = {p, "idem:", job->owner, ":", e->idem_hash};
        size_t lens[] = {strlen(p), 5, strlen(job->owner), 1, 64};
        resp_parts(r, 5, parts, lens);
    } else {
        resp_key(r, p, "idem:-", "", "");
    }
    resp_key(r, p, "seq", "", "");
    resp_key(r, p, "queues", "", "");
}

/* The job's 12 arguments (see enqueue.lua). */
static void enq_args(resp_t *r, const q_new_job_t *job, const struct enq *e)
{
    resp_str(r, e->id);
    resp_arg(r, e->packed, e->packed_len);
    resp_str(r, e->queue);
    resp_ll(r, job->priority);
    resp_ll(r, e->max_attempts);
    resp_ll(r, job->run_at_ms > 0 ? job->run_at_ms : 0);
    resp_str(r, e->register_key ? "1" : "0");
    resp_str(r, e->register_key ? job->request_hash : "");
    resp_ll(r, job->idempotency_ttl_ms > 0 ? job->idempotency_ttl_ms : 86400000);
    resp_ll(r, job->created_ms > 0 ? job->created_ms : 0);
    resp_str(r, job->history ? job->history : "");
    resp_str(r, job->id ? "1" : "0");
}

/* Reads one job's answer of the enqueue script ("created <ms>", "existing <id>",
 * "conflict <id>"; see enqueue.lua) into res; id is the id the job was sent with. */
static void enq_result(const redisReply *r, const char *id, q_enq_result_t *res)
{
    static const struct {
        const char *word;
        int outcome;
    } outcomes[] = {{"created ", Q_ENQ_CREATED},
                    {"existing ", Q_ENQ_EXISTING},
                    {"conflict ", Q_ENQ_CONFLICT}};
    res->rc = Q_EREDIS;
    if (!r || r->type != REDIS_REPLY_STRING) return;
    for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++) {
        size_t wl = strlen(outcomes[i].word);
        const char *rest = r->str + wl;
        size_t rl = r->len - wl;
        if (r->len <= wl || memcmp(r->str, outcomes[i].word, wl) != 0) continue;
        if (outcomes[i].outcome == Q_ENQ_CREATED) {
            char *end;
            long long ms = strtoll(rest, &end, 10);
            if (end != r->str + r->len || ms <= 0) return;
            snprintf(res->id, sizeof(res->id), "%s", id);
            res->created_ms = ms;
        } else {
            if (rl >= Q_ID_SIZE) return;
            memcpy(res->id, rest, rl);
            res->id[rl] = '\0';
            res->created_ms = 0;
        }
        res->outcome = outcomes[i].outcome;
        res->rc = 0;
        return;
    }
}

int q_enqueue_many(q_conn_t *c, const q_new_job_t *const *jobs, int n, q_enq_result_t *res)
{
    struct enq *e = n > 0 ? calloc((size_t)n, sizeof(*e)) : NULL;
    int *slot = n > 0 ? calloc((size_t)n, sizeof(*slot)) : NULL; /* job -> place in the call */
    int *job_of = n > 0 ? calloc((size_t)n, sizeof(*job_of)) : NULL; /* place -> job */
    int k = 0, rc = 0;
    resp_t body = resp_take(c, 0), args = resp_take(c, 1);
    redisReply *r = NULL;

    if (n <= 0) goto out;
    if (!e || !slot || !job_of) {
        rc = Q_ENOMEM;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        memset(&res[i], 0, sizeof(res[i]));
        if ((res[i].rc = enq_prepare(jobs[i], &e[k])) == 0) {
            job_of[k] = i;
            slot[i] = k++;
        } else {
            slot[i] = -1;
        }
    }
    if (k == 0) goto out;
    /* every job's keys, then every job's arguments */
    for (int j = 0; j < k; j++) enq_keys(&body, c->prefix, jobs[job_of[j]], &e[j]);
    for (int j = 0; j < k; j++) enq_args(&args, jobs[job_of[j]], &e[j]);
    if (resp_room(&body, args.len) != 0 || args.failed) {
        rc = Q_ENOMEM;
        goto out;
    }
    memcpy(body.buf + body.len, args.buf, args.len);
    body.len += args.len;
    body.argc += args.argc;
    r = run_resp(c, QS_ENQUEUE, ENQ_KEYS * k, &body);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)k) {
        rc = Q_EREDIS;
        goto out;
    }
    for (int i = 0; i < n; i++)
        if (slot[i] >= 0) enq_result(r->element[slot[i]], e[slot[i]].id, &res[i]);
out:
    for (int i = 0; rc != 0 && i < n; i++)
        if (!slot || slot[i] >= 0) res[i].rc = rc;
    freeReplyObject(r);
    for (int j = 0; e && j < k; j++) free(e[j].packed);
    resp_give(c, 0, &body);
    resp_give(c, 1, &args);
    free(e);
    free(slot);
    free(job_of);
    return rc;
}

int q_enqueue(q_conn_t *c, const q_new_job_t *job, char id_out[Q_ID_SIZE], int *outcome,
              int64_t *created_ms)
{
    q_enq_result_t res;
    int rc = q_enqueue_many(c, &job, 1, &res);
    if (rc == 0) rc = res.rc;
    if (rc == 0) {
        memcpy(id_out, res.id, Q_ID_SIZE);
        *outcome = res.outcome;
        if (created_ms && res.outcome == Q_ENQ_CREATED) *created_ms = res.created_ms;
    }
    return rc;
}

/* ---- reading jobs --------------------------------------------------------------- */

static char *dup_reply(const redisReply *r)
{
    char *s = malloc(r->len + 1);
    if (!s) return NULL;
    memcpy(s, r->str, r->len);
    s[r->len] = '\0';
    return s;
}

/* Builds a snapshot from an HGETALL reply. Returns 0, Q_ENOTFOUND (empty), Q_ENOMEM, or
 * Q_ECORRUPT (rec did not decode; *out is set anyway). */
static int job_from_hash(const char *id, const redisReply *r, q_job_t **out)
{
    q_job_t *j;
    const redisReply *rec = NULL;
    *out = NULL;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) return Q_ENOTFOUND;
    if (!(j = calloc(1, sizeof(*j)))) return Q_ENOMEM;
    snprintf(j->id, sizeof(j->id), "%s", id);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *k = r->element[i]->str;
        const redisReply *v = r->element[i + 1];
        char **s = NULL;
        int *n = NULL;
        int64_t *t = NULL;
        if (!k || v->type != REDIS_REPLY_STRING) continue;
        if (strcmp(k, "rec") == 0) rec = v;
        else if (strcmp(k, "type") == 0) s = &j->type;
        else if (strcmp(k, "queue") == 0) s = &j->queue;
        else if (strcmp(k, "owner") == 0) s = &j->owner;
        else if (strcmp(k, "status") == 0) s = &j->status;
        else if (strcmp(k, "result") == 0) s = &j->result;
        else if (strcmp(k, "error") == 0) s = &j->error;
        else if (strcmp(k, "history") == 0) s = &j->history;
        else if (strcmp(k, "pmsg") == 0) s = &j->progress_message;
        else if (strcmp(k, "worker") == 0) s = &j->worker;
        else if (strcmp(k, "attempt") == 0) n = &j->attempt;
        else if (strcmp(k, "max_attempts") == 0) n = &j->max_attempts;
        else if (strcmp(k, "priority") == 0) n = &j->priority;
        else if (strcmp(k, "progress") == 0) n = &j->progress;
        else if (strcmp(k, "cancel") == 0) n = &j->cancel_requested;
        else if (strcmp(k, "created") == 0) t = &j->created_ms;
        else if (strcmp(k, "run_at") == 0) t = &j->run_at_ms;
        else if (strcmp(k, "started") == 0) t = &j->started_ms;
        else if (strcmp(k, "finished") == 0) t = &j->finished_ms;
        else if (strcmp(k, "updated") == 0) t = &j->updated_ms;
        if (s && v->len == 0) {
            continue; /* an emptied field ("error" after a success, "pmsg"): absent */
        } else if (s) {
            free(*s);
            if (!(*s = dup_reply(v))) goto fail_oom;
        } else if (n) {
            *n = atoi(v->str);
        } else if (t) {
            *t = strtoll(v->str, NULL, 10);
        }
    }
    if (!j->status) { /* a hash without status is not one of ours */
        q_job_free(j);
        return Q_ENOTFOUND;
    }
    /* The scripts write only what changes (queue/lua/enqueue.lua, fetch.lua, finish.lua):
     * the last update is the latest of four times, and a succeeded job is complete, with
     * no error or progress message left from its attempts. */
    if (j->created_ms > j->updated_ms) j->updated_ms = j->created_ms;
    if (j->started_ms > j->updated_ms) j->updated_ms = j->started_ms;
    if (j->finished_ms > j->updated_ms) j->updated_ms = j->finished_ms;
    if (!j->run_at_ms) j->run_at_ms = j->created_ms; /* not written when it is the same */
    if (strcmp(j->status, "succeeded") == 0) {
        j->progress = 100;
        free(j->progress_message);
        free(j->error);
        j->progress_message = j->error = NULL;
    }
    *out = j;
    if (rec) {
        q_record_t d;
        char why[128];
        if (q_record_decode(rec->str, rec->len, &d, why, sizeof(why)) != 0) return Q_ECORRUPT;
        j->input = d.input;
        j->idempotency_key = d.idempotency_key;
        j->timeout_ms = d.timeout_ms;
        d.input = d.idempotency_key = NULL;
        /* type and owner live in the record only (older hashes have them too) */
        if (!j->type) {
            j->type = d.type;
            d.type = NULL;
        }
        if (!j->owner) {
            j->owner = d.owner;
            d.owner = NULL;
        }
        q_record_clear(&d);
    }
    return 0;
fail_oom:
    q_job_free(j);
    return Q_ENOMEM;
}

int q_job_get(q_conn_t *c, const char *id, q_job_t **out)
{
    *out = NULL;
    if (!q_valid_id(id)) return Q_ENOTFOUND;
    redisReply *r = q_command(c, "HGETALL %sjob:%s", c->prefix, id);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        return Q_EREDIS;
    }
    int rc = job_from_hash(id, r, out);
    freeReplyObject(r);
    return rc;
}

int q_job_get_many(q_conn_t *c, const char *const *ids, int n, q_job_t **out)
{
    redisContext *rc = q_conn_redis(c);
    int err = 0;
    for (int i = 0; i < n; i++) out[i] = NULL;
    if (!rc) return Q_EREDIS;
    for (int i = 0; i < n; i++)
        if (redisAppendCommand(rc, "HGETALL %sjob:%s", c->prefix, ids[i]) != REDIS_OK) {
            drop(c);
            return Q_EREDIS;
        }
    for (int i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(rc, &r) != REDIS_OK) {
            checked(c, NULL);
            for (int k = 0; k < i; k++) q_job_free(out[k]), out[k] = NULL;
            return Q_EREDIS;
        }
        int e = job_from_hash(ids[i], r, &out[i]);
        if (e == Q_ENOMEM) err = Q_ENOMEM;
        freeReplyObject(r);
    }
    if (err) /* all or nothing: callers free only the array on an error */
        for (int i = 0; i < n; i++) q_job_free(out[i]), out[i] = NULL;
    return err;
}

/* ---- cancel / retry ------------------------------------------------------------- */

/* Runs a script whose reply is a status string, copied into out (>= 32 bytes). */
static int run_status(q_conn_t *c, q_argv_t *a, char *out)
{
    redisReply *r = run(c, a);
    if (!r) return Q_EREDIS;
    int ok = r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS;
    if (ok) {
        /* "is:<status>": the job is in a state that forbids the move */
        size_t skip = r->len > 3 && memcmp(r->str, "is:", 3) == 0 ? 3 : 0;
        snprintf(out, 32, "%.*s", (int)(r->len - skip), r->str + skip);
        ok = skip ? 2 : 1;
    }
    freeReplyObject(r);
    return ok == 2 ? Q_ECONFLICT : ok ? 0 : Q_EREDIS;
}

int q_cancel(q_conn_t *c, const char *id, char *result)
{
    char k_job[128], k_done[128], ch_done[128], ch_cancel[128];
    if (!q_valid_id(id)) return Q_ENOTFOUND;
    q_key_job(k_job, sizeof(k_job), c->prefix, id);
    snprintf(k_done, sizeof(k_done), "%sdone", c->prefix);
    q_channel_done(c->prefix, ch_done, sizeof(ch_done));
    q_channel_cancel(c->prefix, ch_cancel, sizeof(ch_cancel));
    const char *keys[] = {k_job, k_done, NULL};
    const char *args[] = {c->prefix, id, ch_done, ch_cancel, NULL};
    int rc = run_status(c, script(QS_CANCEL, keys, args), result);
    if (rc == 0 && strcmp(result, "not_found") == 0) return Q_ENOTFOUND;
    return rc;
}

int q_retry(q_conn_t *c, const char *id, char *status_out)
{
    char k_job[128], k_seq[128], k_done[128];
    if (!q_valid_id(id)) return Q_ENOTFOUND;
    q_key_job(k_job, sizeof(k_job), c->prefix, id);
    snprintf(k_seq, sizeof(k_seq), "%sseq", c->prefix);
    snprintf(k_done, sizeof(k_done), "%sdone", c->prefix);
    const char *keys[] = {k_job, k_seq, k_done, NULL};
    const char *args[] = {c->prefix, id, NULL};
    int rc = run_status(c, script(QS_RETRY, keys, args), status_out);
    if (rc == 0 && strcmp(status_out, "not_found") == 0) return Q_ENOTFOUND;
    return rc;
}

/* ---- listings and figures ------------------------------------------------------- */

int q_owner_page(q_conn_t *c, const char *owner, int64_t before_ms, const char *before_id,
                 int max, char (*ids)[Q_ID_SIZE], int64_t *created_ms)
{
    char maxs[32];
    int n = 0, offset = 0, chunk = max + 64;
    if (before_ms > 0) snprintf(maxs, sizeof(maxs), "%lld", (long long)before_ms);
    else snprintf(maxs, sizeof(maxs), "+inf");
    /* Entries at before_ms with ids >= before_id were on earlier pages; they come first
     * (equal scores go by member, descending here): skip them, reading on past as many
     * as there are (a batch of enqueues shares one creation time). */
    for (;;) {
        redisReply *r = q_command(c, "ZREVRANGEBYSCORE %sowner:%s %s -inf WITHSCORES LIMIT %d %d",
                                  c->prefix, owner, maxs, offset, chunk);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return Q_EREDIS;
        }
        size_t got = r->elements / 2;
        for (size_t i = 0; i + 1 < r->elements && n < max; i += 2) {
            const redisReply *m = r->element[i], *s = r->element[i + 1];
            if (m->type != REDIS_REPLY_STRING || m->len >= Q_ID_SIZE ||
                s->type != REDIS_REPLY_STRING)
                continue;
            int64_t t = strtoll(s->str, NULL, 10);
            if (before_ms > 0 && before_id && t == before_ms && strcmp(m->str, before_id) >= 0)
                continue;
            memcpy(ids[n], m->str, m->len);
            ids[n][m->len] = '\0';
            created_ms[n++] = t;
        }
        freeReplyObject(r);
        if (n >= max || got < (size_t)chunk) return n;
        offset += (int)got;
    }
}

void q_names_free(char **names, int n)
{
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

int q_queue_names(q_conn_t *c, char ***names, int *n)
{
    *names = NULL;
    *n = 0;
    redisReply *r = q_command(c, "SMEMBERS %squeues", c->prefix);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return Q_EREDIS;
    }
    char **v = calloc(r->elements + 1, sizeof(char *));
    if (!v) {
        freeReplyObject(r);
        return Q_ENOMEM;
    }
    int k = 0;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING && q_valid_queue(r->element[i]->str))
            if ((v[k] = strdup(r->element[i]->str))) k++;
    freeReplyObject(r);
    *names = v;
    *n = k;
    return 0;
}

static long long hash_int(const redisReply *h, const char *field)
{
    for (size_t i = 0; h && h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
        if (h->element[i]->type == REDIS_REPLY_STRING && strcmp(h->element[i]->str, field) == 0)
            return h->element[i + 1]->type == REDIS_REPLY_STRING
                       ? strtoll(h->element[i + 1]->str, NULL, 10)
                       : 0;
    return 0;
}

int q_queue_stats(q_conn_t *c, json_t **out)
{
    static const char *sets[] = {"ready", "working", "scheduled", "dead"};
    char **names;
    int n, rc = 0;
    redisContext *rcx;
    *out = NULL;
    if ((rc = q_queue_names(c, &names, &n)) != 0) return rc;
    if (!(rcx = q_conn_redis(c))) {
        q_names_free(names, n);
        return Q_EREDIS;
    }
    long long minute = cm_now_ms() / 60000 - 1; /* the last whole minute */
    for (int i = 0; i < n; i++) {
        for (int s = 0; s < 4; s++)
            redisAppendCommand(rcx, "ZCARD %s{%s}:%s", c->prefix, names[i], sets[s]);
        redisAppendCommand(rcx, "HGETALL %s{%s}:stats", c->prefix, names[i]);
        redisAppendCommand(rcx, "HGETALL %s{%s}:stats:%lld", c->prefix, names[i], minute);
    }
    json_t *arr = json_array();
    for (int i = 0; i < n && rc == 0; i++) {
        long long cnt[4];
        redisReply *r = NULL, *m = NULL;
        for (int s = 0; s < 6; s++) {
            void *x = NULL;
            if (redisGetReply(rcx, &x) != REDIS_OK) {
                checked(c, NULL);
                rc = Q_EREDIS;
                break;
            }
            if (s < 4) {
                cnt[s] = ((redisReply *)x)->type == REDIS_REPLY_INTEGER
                             ? ((redisReply *)x)->integer : 0;
                freeReplyObject(x);
            } else if (s == 4) {
                r = x;
            } else {
                m = x;
            }
        }
        if (rc) {
            freeReplyObject(r);
            break;
        }
        json_array_append_new(
            arr, json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I}}", "name",
                           names[i], "ready", cnt[0], "running", cnt[1], "scheduled", cnt[2],
                           "dead", cnt[3], "processed", hash_int(r, "succeeded"), "failed",
                           hash_int(r, "failed"), "retried", hash_int(r, "retried"),
                           "canceled", hash_int(r, "canceled"), "deadTotal",
                           hash_int(r, "dead"), "lastMinute", "succeeded",
                           hash_int(m, "succeeded"), "failed", hash_int(m, "failed")));
        freeReplyObject(r);
        freeReplyObject(m);
    }
    q_names_free(names, n);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

/* ---- scheduler duties ----------------------------------------------------------- */

/* Runs a script whose reply is an integer. Returns it, or Q_EREDIS. */
static long long run_int(q_conn_t *c, q_argv_t *a)
{
    redisReply *r = run(c, a);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : Q_EREDIS;
    freeReplyObject(r);
    return v;
}

int q_leader(q_conn_t *c, const char *duty, const char *candidate, int ttl_ms)
{
    char key[160], ttl[16];
    snprintf(key, sizeof(key), "%sleader:%s", c->prefix, duty);
    snprintf(ttl, sizeof(ttl), "%d", ttl_ms);
    const char *keys[] = {key, NULL}, *args[] = {candidate, ttl, NULL};
    return (int)run_int(c, script(QS_LEADER, keys, args));
}

int q_promote(q_conn_t *c, const char *queue, int limit)
{
    char k_s[160], k_r[160], k_m[160], k_seq[128], lim[16];
    snprintf(k_s, sizeof(k_s), "%s{%s}:scheduled", c->prefix, queue);
    snprintf(k_r, sizeof(k_r), "%s{%s}:ready", c->prefix, queue);
    snprintf(k_m, sizeof(k_m), "%s{%s}:marker", c->prefix, queue);
    snprintf(k_seq, sizeof(k_seq), "%sseq", c->prefix);
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *keys[] = {k_s, k_r, k_m, k_seq, NULL}, *args[] = {c->prefix, lim, NULL};
    return (int)run_int(c, script(QS_PROMOTE, keys, args));
}

int q_reclaim(q_conn_t *c, const char *queue, int limit)
{
    char k_w[160], k_r[160], k_m[160], k_d[160], k_done[128], k_st[160], lim[16], ch[128];
    snprintf(k_w, sizeof(k_w), "%s{%s}:working", c->prefix, queue);
    snprintf(k_r, sizeof(k_r), "%s{%s}:ready", c->prefix, queue);
    snprintf(k_m, sizeof(k_m), "%s{%s}:marker", c->prefix, queue);
    snprintf(k_d, sizeof(k_d), "%s{%s}:dead", c->prefix, queue);
    snprintf(k_done, sizeof(k_done), "%sdone", c->prefix);
    snprintf(k_st, sizeof(k_st), "%s{%s}:stats", c->prefix, queue);
    snprintf(lim, sizeof(lim), "%d", limit);
    q_channel_done(c->prefix, ch, sizeof(ch));
    const char *keys[] = {k_w, k_r, k_m, k_d, k_done, k_st, NULL};
    const char *args[] = {c->prefix, lim, ch, NULL};
    return (int)run_int(c, script(QS_RECLAIM, keys, args));
}

int q_done_batch(q_conn_t *c, int limit, q_job_t ***jobs, int *n)
{
    *jobs = NULL;
    *n = 0;
    redisReply *r = q_command(c, "ZRANGE %sdone 0 %d", c->prefix, limit - 1);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return Q_EREDIS;
    }
    int cnt = (int)r->elements, rc = 0, k = 0;
    const char **ids = calloc((size_t)cnt + 1, sizeof(char *));
    q_job_t **got = calloc((size_t)cnt + 1, sizeof(q_job_t *));
    if (!ids || !got) {
        rc = Q_ENOMEM;
        goto out;
    }
    {
        int m = 0;
        for (int i = 0; i < cnt; i++) {
            const redisReply *e = r->element[i];
            if (e->type == REDIS_REPLY_STRING && q_valid_id(e->str))
                ids[m++] = e->str;
            else if (e->type == REDIS_REPLY_STRING) /* not a job id: nothing to archive */
                freeReplyObject(q_command(c, "ZREM %sdone %b", c->prefix, e->str, e->len));
        }
        cnt = m;
    }
    if ((rc = q_job_get_many(c, ids, cnt, got)) != 0) goto out;
    for (int i = 0; i < cnt; i++) {
        if (got[i]) {
            got[k++] = got[i];
        } else {
            /* the hash is gone (or not ours): nothing to archive */
            freeReplyObject(q_command(c, "ZREM %sdone %s", c->prefix, ids[i]));
        }
    }
    *jobs = got;
    *n = k;
    got = NULL;
out:
    free(got);
    free(ids);
    freeReplyObject(r);
    return rc;
}

int q_mark_archived(q_conn_t *c, q_job_t *const *jobs, int n, int64_t retention_ms,
                    int64_t dead_retention_ms)
{
    char k_done[128], ret[32], dret[32];
    int total = 3 + 1 + 2 * n;
    const char **v = calloc((size_t)total, sizeof(char *));
    size_t *len = calloc((size_t)total, sizeof(size_t));
    char (*upd)[24] = calloc((size_t)n + 1, sizeof(*upd));
    long long rc = Q_ENOMEM;
    if (!v || !len || !upd) goto out;
    snprintf(k_done, sizeof(k_done), "%sdone", c->prefix);
    snprintf(ret, sizeof(ret), "%lld", (long long)(retention_ms > 0 ? retention_ms : 1));
    snprintf(dret, sizeof(dret), "%lld",
             (long long)(dead_retention_ms > 0 ? dead_retention_ms : 1));
    v[0] = k_done;
    v[1] = c->prefix;
    v[2] = ret;
    v[3] = dret;
    for (int i = 0; i < n; i++) {
        snprintf(upd[i], sizeof(upd[i]), "%lld", (long long)jobs[i]->updated_ms);
        v[4 + 2 * i] = jobs[i]->id;
        v[5 + 2 * i] = upd[i];
    }
    for (int i = 0; i < total; i++) len[i] = strlen(v[i]);
    rc = run_int(c, script_bin(QS_ARCHIVED, 1, total, v, len));
out:
    free(v);
    free(len);
    free(upd);
    return (int)rc;
}

/* Sweeps one sorted set; returns the number removed or Q_EREDIS. Entries of live jobs
 * stay where they are (the old end may be full of them: jobs scheduled far ahead, long
 * retry series, restored jobs): each call looks past those the calls before kept. */
static int sweep_key(q_conn_t *c, const char *key, const char *cutoff)
{
    int removed = 0;
    long long kept = 0;
    for (int round = 0; round < 200; round++) { /* bounded: at most 200 x 500 entries */
        char offset[24];
        snprintf(offset, sizeof(offset), "%lld", kept);
        const char *keys[] = {key, NULL}, *args[] = {c->prefix, cutoff, "500", offset, NULL};
        redisReply *r = run(c, script(QS_SWEEP, keys, args));
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
            freeReplyObject(r);
            return Q_EREDIS;
        }
        long long seen = r->element[0]->integer, gone = r->element[1]->integer;
        freeReplyObject(r);
        removed += (int)gone;
        kept += seen - gone;
        if (seen < 500) break;
    }
    return removed;
}

int q_sweep(q_conn_t *c, int64_t cutoff_ms)
{
    char cutoff[32], pattern[128], cursor[32] = "0";
    int removed = 0;
    snprintf(cutoff, sizeof(cutoff), "%lld", (long long)cutoff_ms);
    snprintf(pattern, sizeof(pattern), "%sowner:*", c->prefix);
    do {
        redisReply *r = q_command(c, "SCAN %s MATCH %s COUNT 500", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return Q_EREDIS;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            if (r->element[1]->element[i]->type != REDIS_REPLY_STRING) continue;
            int n = sweep_key(c, r->element[1]->element[i]->str, cutoff);
            if (n > 0) removed += n;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);

    char **names, key[160];
    int nq;
    if (q_queue_names(c, &names, &nq) != 0) return Q_EREDIS;
    for (int i = 0; i < nq; i++) {
        snprintf(key, sizeof(key), "%s{%s}:dead", c->prefix, names[i]);
        int n = sweep_key(c, key, cutoff);
        if (n > 0) removed += n;
    }
    q_names_free(names, nq);
    return removed;
}
