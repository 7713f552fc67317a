/* api/jobs.c — the job endpoints. */
#include "api/jobs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/ai.h"
#include "api/archive.h"
#include "common/config.h"
#include "common/log.h"
#include "common/util.h"
#include "workers/registry.h"

#define WAIT_SLICE_MS 5000 /* a long-poll re-reads its job at least this often */
#define SCAN_MAX 2000      /* owner index entries one listing reads from Redis */
#define SCAN_BATCH 100
#define COLD_ROUNDS 20 /* archive reads one listing makes (of up to LIMIT_MAX + 1 rows) */
#define LIMIT_DEFAULT 20
#define LIMIT_MAX 100
#define IDEM_KEY_MAX 255
#define TIMEOUT_MAX_S 86400
#define LATER_INPUT_MAX 16384 /* larger inputs: the request thread writes the 202 */
#define ATTEMPTS_MAX 1000

static const char *const statuses[] = {"queued", "scheduled", "running", "succeeded",
                                       "failed", "dead",      "canceled", NULL};

/* ---- shared ---------------------------------------------------------------------- */

static int not_found(api_req_t *r)
{
    return api_error(r, 404, "NOT_FOUND", NULL, NULL, "job not found");
}

static int archive_down(api_req_t *r)
{
    return api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                     "the job archive is unavailable; try again shortly");
}

/* 1 if the caller may see a job of owner (NULL or "": none, for admins only). */
static int may_see(const api_req_t *r, const char *owner)
{
    return r->who.role == API_ROLE_ADMIN || (owner && *owner && strcmp(owner, r->who.owner) == 0);
}

static int visible(const api_req_t *r, const q_job_t *j) { return may_see(r, j->owner); }

/* Reads job id from Redis, else from the archive (*hot, when not NULL, says which).
 * Returns 0 with *out (caller frees), or the status of the error it sent: 404 also for a
 * job the caller may not see. */
static int load_job(api_req_t *r, const char *id, q_job_t **out, int *hot)
{
    int rc = q_job_get(r->q, id, out);
    if (hot) *hot = rc != Q_ENOTFOUND;
    if (rc == Q_ECORRUPT) rc = 0; /* shown without its input; the worker dead-letters it */
    if (rc == Q_ENOTFOUND) {
        rc = api_archive_get(r->pg, id, out);
        if (rc == API_ARCH_ENOTFOUND) return not_found(r);
        if (rc != 0) return archive_down(r);
    } else if (rc != 0) {
        return api_queue_error(r, rc);
    }
    if (!visible(r, *out)) {
        q_job_free(*out);
        *out = NULL;
        return not_found(r);
    }
    return 0;
}

/* q_enqueue through the process's batcher (tests and tools may run without one). */
static int api_enqueue(api_req_t *r, const q_new_job_t *job, char id[Q_ID_SIZE], int *outcome,
                       int64_t *created_ms)
{
    if (r->enq) return q_batcher_enqueue(r->enq, job, id, outcome, created_ms);
    return q_enqueue(r->q, job, id, outcome, created_ms);
}

/* Drops the cached answer for id: call after changing the job in Redis. */
static void changed(api_req_t *r, const char *id)
{
    if (r->cache) api_cache_forget(r->cache, id);
}

/* The header lines of a 202 for job id, plus extra ones (or NULL). */
static void accepted_headers(char *headers, size_t len, const char *id, const char *extra)
{
    snprintf(headers, len, "Location: /v1/jobs/%s\r\nRetry-After: 1\r\n%s", id,
             extra ? extra : "");
}

/* 202 with the job, Location and Retry-After, plus extra header lines (or NULL). */
static int accepted(api_req_t *r, const q_job_t *job, const char *extra)
{
    char headers[256];
    accepted_headers(headers, sizeof(headers), job->id, extra);
    return api_reply(r, 202, q_job_to_json(job), headers);
}

/* ---- the 202 of a new job, rendered directly --------------------------------------- */

/* Output into a fixed buffer: what does not fit is counted, not written. */
typedef struct out {
    char *buf;
    size_t cap, n;
} out_t;

static void out_put(out_t *o, const char *s, size_t len)
{
    if (o->n < o->cap) memcpy(o->buf + o->n, s, len < o->cap - o->n ? len : o->cap - o->n);
    o->n += len;
}

static void out_str(out_t *o, const char *s) { out_put(o, s, strlen(s)); }

static void out_int(out_t *o, long long v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", v);
    out_put(o, num, (size_t)n);
}

/* A JSON string of printable ASCII (names checked by q_valid_*, Idempotency-Keys by
 * valid_idem_key), escaped as jansson does: only '"' and '\'. */
static void out_ascii(out_t *o, const char *s)
{
    out_put(o, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\') out_put(o, "\\", 1);
        out_put(o, p, 1);
    }
    out_put(o, "\"", 1);
}

/* A time as JSON (null when unset); text, formatted once, is reused while ms stays the
 * same (a new job's createdAt and updatedAt). */
static void out_time(out_t *o, int64_t ms, char text[40], int64_t *text_ms)
{
    if (ms <= 0) {
        out_str(o, "null");
        return;
    }
    if (*text_ms != ms) {
        cm_format_time(ms, text, 40);
        *text_ms = ms;
    }
    out_put(o, "\"", 1);
    out_str(o, text);
    out_put(o, "\"", 1);
}

size_t api_render_created(const q_job_t *job, const char *input, size_t input_len, char *buf,
                          size_t cap)
{
    out_t o = {.buf = buf, .cap = cap};
    out_str(&o, "{\"id\":");
    out_ascii(&o, job->id);
    out_str(&o, ",\"object\":\"job\",\"type\":");
    out_ascii(&o, job->type);
    out_str(&o, ",\"queue\":");
    out_ascii(&o, job->queue);
    out_str(&o, ",\"status\":");
    out_ascii(&o, job->status);
    out_str(&o, ",\"attempt\":0,\"maxAttempts\":");
    out_int(&o, job->max_attempts);
    out_str(&o, ",\"priority\":");
    out_int(&o, job->priority);
    out_str(&o, ",\"input\":");
    if (input) out_put(&o, input, input_len);
    else out_str(&o, "{}");
    out_str(&o, ",\"progress\":{\"percent\":0,\"message\":null},\"result\":null,"
                "\"error\":null,\"attempts\":[],\"cancelRequested\":false,"
                "\"idempotencyKey\":");
    if (job->idempotency_key) out_ascii(&o, job->idempotency_key);
    else out_str(&o, "null");
    char t[40];
    int64_t t_ms = 0;
    out_str(&o, ",\"runAt\":");
    out_time(&o, job->run_at_ms, t, &t_ms);
    out_str(&o, ",\"createdAt\":");
    out_time(&o, job->created_ms, t, &t_ms);
    out_str(&o, ",\"startedAt\":null,\"finishedAt\":null,\"updatedAt\":");
    out_time(&o, job->updated_ms, t, &t_ms);
    out_put(&o, "}", 1);
    return o.n;
}

/* Renders job (see api_render_created) into stackbuf (size cap) or, when it does not
 * fit, a new buffer. Returns where it is (free it unless stackbuf), NULL when out of
 * memory; *n is the length. */
static char *render_created(const q_job_t *job, const char *shown, size_t shown_len,
                            char *stackbuf, size_t cap, size_t *n)
{
    char *buf;
    *n = api_render_created(job, shown, shown_len, stackbuf, cap);
    if (*n <= cap) return stackbuf;
    if (!(buf = malloc(*n))) return NULL;
    api_render_created(job, shown, shown_len, buf, *n);
    return buf;
}

/* ---- a POST answered by the enqueue sender (api/conn.h) -------------------------- */

/* Owns what the job and its reply need once the request thread went on. */
typedef struct later_job {
    api_later_t later;
    q_new_job_t nj;
    q_job_t job; /* the reply; the id and times are filled in on the answer */
    char *input, *shown; /* owned; shown may be input */
    size_t shown_len;
    char strings[]; /* type, queue and owner */
} later_job_t;

static void later_job_free(later_job_t *lj)
{
    if (lj->shown != lj->input) free(lj->shown);
    free(lj->input);
    free(lj);
}

/* On the sender thread: the job is stored (or not); writes the reply. */
static void later_answered(void *arg, const q_enq_result_t *res)
{
    later_job_t *lj = arg;
    char stackbuf[4096], headers[256], *body;
    size_t n;

    if (res->rc != 0 || res->outcome != Q_ENQ_CREATED) { /* created: it has no key or id */
        api_later_queue_error(&lj->later, res->rc != 0 ? res->rc : Q_EINVAL);
        later_job_free(lj);
        return;
    }
    memcpy(lj->job.id, res->id, sizeof(lj->job.id));
    lj->job.created_ms = lj->job.updated_ms = res->created_ms;
    if (!(body = render_created(&lj->job, lj->shown, lj->shown_len, stackbuf, sizeof(stackbuf),
                                &n))) {
        LOG_REQ_ERR(lj->later.request_id, "out of memory for a %zu-byte reply", n);
        api_later_text(&lj->later, 500, NULL, 0, NULL);
    } else {
        accepted_headers(headers, sizeof(headers), lj->job.id, NULL);
        api_later_text(&lj->later, 202, body, n, headers);
        if (body != stackbuf) free(body);
    }
    later_job_free(lj);
}

/* Copies s into *at, moving it past the copy. Returns the copy. */
static char *put_string(char **at, const char *s, size_t len)
{
    char *copy = memcpy(*at, s, len + 1);
    *at += len + 1;
    return copy;
}

/* Hands nj (a new job without idempotency key; its strings are copied), shown as job
 * with its input as shown, to the enqueue senders, which answer the request: 0 (input
 * and shown, which may be the same, are then taken, and the reply is written or on its
 * way), or -1 when it cannot be deferred (nothing taken, nothing sent). */
static int create_later(api_req_t *r, const q_new_job_t *nj, const q_job_t *job, char *input,
                        char *shown, size_t shown_len)
{
    size_t lt = strlen(nj->type), lq = strlen(nj->queue), lo = strlen(nj->owner);
    later_job_t *lj = malloc(sizeof(*lj) + lt + lq + lo + 3);
    char *at;

    if (!lj) return -1;
    if (api_later_begin(r, &lj->later, 202) != 0) {
        free(lj);
        return -1;
    }
    lj->nj = *nj;
    lj->job = *job;
    at = lj->strings;
    lj->nj.type = lj->job.type = put_string(&at, nj->type, lt);
    lj->nj.queue = lj->job.queue = put_string(&at, nj->queue, lq);
    lj->nj.owner = lj->job.owner = put_string(&at, nj->owner, lo);
    lj->nj.input = lj->input = input;
    lj->job.input = input ? input : "{}";
    lj->shown = shown;
    lj->shown_len = shown_len;
    if (q_batcher_submit(r->enq, &lj->nj, later_answered, lj) != 0) {
        api_later_queue_error(&lj->later, Q_ENOMEM);
        later_job_free(lj);
    }
    return 0;
}

/* 1 if json holds a real number anywhere (rendered differently by api_render). */
static int has_real(const json_t *json)
{
    const char *k;
    size_t i;
    json_t *v;

    if (json_is_real(json)) return 1;
    if (json_is_object(json)) {
        json_object_foreach((json_t *)json, k, v) if (has_real(v)) return 1;
    } else if (json_is_array(json)) {
        json_array_foreach(json, i, v) if (has_real(v)) return 1;
    }
    return 0;
}

static int conflict(api_req_t *r, const char *status, const char *what)
{
    return api_error(r, 409, "CONFLICT", json_pack("{s:s}", "status", status), NULL,
                     "%s; its status is %s", what, status);
}

/* ---- POST /v1/jobs --------------------------------------------------------------- */

#define FAIL(f, ...)                                                                     \
    do {                                                                                 \
        snprintf(field, flen, "%s", (f));                                                \
        snprintf(msg, mlen, __VA_ARGS__);                                                \
        return -1;                                                                       \
    } while (0)

/* The value of name in body, NULL when absent or null. */
static const json_t *get(const json_t *body, const char *name)
{
    const json_t *v = json_object_get(body, name);
    return json_is_null(v) ? NULL : v;
}

/* Reads integer field name of body into *out when present. Returns 1 when set, 0 when
 * absent (or null), -1 when not an integer in [min, max] (field and msg set). */
static int int_field(const json_t *body, const char *name, long long min, long long max,
                     long long *out, char *field, size_t flen, char *msg, size_t mlen)
{
    const json_t *v = get(body, name);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        FAIL(name, "%s must be an integer from %lld to %lld", name, min, max);
    *out = json_integer_value(v);
    return 1;
}

int api_job_spec_parse(const json_t *body, int64_t now_ms, api_job_spec_t *spec, char *field,
                       size_t flen, char *msg, size_t mlen)
{
    static const char *const known[] = {"type",        "input",    "queue",
                                        "delaySeconds", "runAt",    "maxAttempts",
                                        "priority",     "timeoutSeconds", NULL};
    const char *key;
    const json_t *v, *delay, *run_at;
    const wk_type_t *t;
    long long n;
    int rc;

    memset(spec, 0, sizeof(*spec));
    json_object_foreach((json_t *)body, key, v) {
        int i = 0;
        while (known[i] && strcmp(known[i], key) != 0) i++;
        if (!known[i]) FAIL(key, "unknown field '%s'", key);
    }

    v = get(body, "type");
    if (!json_is_string(v)) FAIL("type", "type is required and must be a string");
    spec->type = json_string_value(v);
    if (!q_valid_type(spec->type)) FAIL("type", "type is not a valid job type name");
    if (!(t = wk_type_find(spec->type))) {
        char names[256];
        wk_type_names(names, sizeof(names));
        FAIL("type", "unknown job type '%s' (known: %s)", spec->type, names);
    }

    v = get(body, "input");
    if (v && !json_is_object(v)) FAIL("input", "input must be an object");
    spec->input = v;
    {
        char f[64], m[192];
        if (wk_type_validate(t, v, f, sizeof(f), m, sizeof(m)) != 0) FAIL(f, "%s %s", f, m);
    }

    spec->queue = "default";
    if ((v = get(body, "queue"))) {
        if (!json_is_string(v) || !q_valid_queue(json_string_value(v)))
            FAIL("queue", "queue must be 1-%d characters of [A-Za-z0-9_.-]", Q_NAME_MAX);
        spec->queue = json_string_value(v);
    }

    delay = get(body, "delaySeconds");
    run_at = get(body, "runAt");
    if (delay && run_at) FAIL("runAt", "give delaySeconds or runAt, not both");
    if (delay) {
        if (!json_is_number(delay) || json_number_value(delay) < 0 ||
            json_number_value(delay) > API_MAX_DELAY_S)
            FAIL("delaySeconds", "delaySeconds must be a number from 0 to %d", API_MAX_DELAY_S);
        if (json_number_value(delay) > 0)
            spec->run_at_ms = now_ms + (int64_t)llround(json_number_value(delay) * 1000.0);
    }
    if (run_at) {
        int64_t ms;
        if (!json_is_string(run_at) || api_parse_rfc3339(json_string_value(run_at), &ms) != 0)
            FAIL("runAt", "runAt must be an RFC 3339 date-time, e.g. 2030-01-02T03:04:05Z");
        if (ms > now_ms + (int64_t)API_MAX_DELAY_S * 1000)
            FAIL("runAt", "runAt must be within %d seconds from now", API_MAX_DELAY_S);
        if (ms > now_ms) spec->run_at_ms = ms;
    }

    spec->max_attempts = wk_type_max_attempts(t);
    if ((rc = int_field(body, "maxAttempts", 1, ATTEMPTS_MAX, &n, field, flen, msg, mlen)) < 0)
        return -1;
    if (rc) spec->max_attempts = (int)n;

    spec->priority = Q_PRIORITY_DEFAULT;
    if ((rc = int_field(body, "priority", Q_PRIORITY_MIN, Q_PRIORITY_MAX, &n, field, flen, msg,
                        mlen)) < 0)
        return -1;
    if (rc) spec->priority = (int)n;

    spec->timeout_ms = wk_type_timeout_ms(t);
    if ((rc = int_field(body, "timeoutSeconds", 1, TIMEOUT_MAX_S, &n, field, flen, msg, mlen)) < 0)
        return -1;
    if (rc) spec->timeout_ms = (int)n * 1000;
    return 0;
}

/* 1 if an Idempotency-Key is 1-255 printable ASCII characters. */
static int valid_idem_key(const char *k)
{
    size_t n = 0;
    for (; k[n]; n++)
        if (n >= IDEM_KEY_MAX || (unsigned char)k[n] < 0x20 || (unsigned char)k[n] > 0x7e)
            return 0;
    return n > 0;
}

int api_jobs_create(api_req_t *r)
{
    const char *key = mg_get_header(r->conn, "Idempotency-Key");
    int64_t now = cm_now_ms();
    char field[64], msg[256], id[Q_ID_SIZE], hash[65];
    char *input = NULL, *canon = NULL, *shown = NULL;
    api_job_spec_t spec;
    json_t *body;
    int outcome, rc, st;

    if (api_read_json(r, 1, &body) != 0) return r->status;
    if (key && !valid_idem_key(key)) {
        st = api_field_error(r, "Idempotency-Key",
                             "Idempotency-Key must be 1-%d printable ASCII characters",
                             IDEM_KEY_MAX);
        goto out;
    }
    if (api_job_spec_parse(body, now, &spec, field, sizeof(field), msg, sizeof(msg)) != 0) {
        st = api_field_error(r, field, "%s", msg);
        goto out;
    }
    /* a provider call costs money: the same checks as POST /v1/chat/completions */
    if (strcmp(spec.type, "ai.chat") == 0 && (st = api_ai_check_job(r, spec.input)) != 0) goto out;
    if (spec.input && !(input = json_dumps(spec.input, JSON_COMPACT))) goto fail_oom;
    /* the reply shows reals with 12 digits; without reals, it shows the input as kept */
    shown = input;
    if (spec.input && has_real(spec.input) && !(shown = json_dumps(spec.input, API_RENDER_FLAGS)))
        goto fail_oom;
    if (key) {
        if (!(canon = json_dumps(body, JSON_SORT_KEYS | JSON_COMPACT))) goto fail_oom;
        cm_sha256_hex(canon, strlen(canon), hash);
    }
    q_new_job_t nj = {
        .type = spec.type,
        .queue = spec.queue,
        .owner = r->who.owner,
        .input = input,
        .max_attempts = spec.max_attempts,
        .priority = spec.priority,
        .timeout_ms = spec.timeout_ms,
        .run_at_ms = spec.run_at_ms,
        .idempotency_key = key,
        .request_hash = key ? hash : NULL,
        .idempotency_ttl_ms = (int64_t)cm_cfg.idempotency_ttl_seconds * 1000,
    };
    /* What the enqueue script writes, known without reading it back (but the id and
     * the creation time, which its answer gives). */
    q_job_t job = {
        .type = (char *)spec.type,
        .queue = (char *)spec.queue,
        .owner = r->who.owner,
        .status = spec.run_at_ms > now ? "scheduled" : "queued",
        .input = input ? input : "{}",
        .idempotency_key = (char *)key,
        .max_attempts = spec.max_attempts,
        .priority = spec.priority,
        .timeout_ms = spec.timeout_ms,
        .run_at_ms = spec.run_at_ms > now ? spec.run_at_ms : now,
    };
    size_t shown_len = shown ? strlen(shown) : 0;
    /* A new job (no key: no earlier one to show) is answered by the enqueue sender,
     * unless its reply is large (a slow reader would hold the sender). */
    if (!key && r->enq && shown_len <= LATER_INPUT_MAX &&
        create_later(r, &nj, &job, input, shown, shown_len) == 0) {
        input = shown = NULL; /* the sender's now */
        st = r->status;
        goto out;
    }
    int64_t created = now;
    if ((rc = api_enqueue(r, &nj, id, &outcome, &created)) != 0) {
        st = api_queue_error(r, rc);
        goto out;
    }
    if (outcome == Q_ENQ_CREATED) {
        char stackbuf[4096], headers[256], *text;
        size_t n;
        memcpy(job.id, id, sizeof(job.id));
        job.created_ms = job.updated_ms = created;
        if (!(text = render_created(&job, shown, shown_len, stackbuf, sizeof(stackbuf), &n)))
            goto fail_oom;
        accepted_headers(headers, sizeof(headers), id, NULL);
        st = api_reply_text(r, 202, text, n, headers);
        if (text != stackbuf) free(text);
    } else if (outcome == Q_ENQ_EXISTING) {
        q_job_t *existing;
        if ((st = load_job(r, id, &existing, NULL)) == 0) {
            st = accepted(r, existing, "Idempotent-Replayed: true\r\n");
            q_job_free(existing);
        }
    } else {
        st = api_error(r, 422, "CONFLICT", json_pack("{s:s}", "field", "Idempotency-Key"), NULL,
                       "this Idempotency-Key was already used with a different request");
    }
out:
    if (shown != input) free(shown);
    free(input);
    free(canon);
    json_decref(body);
    return st;
fail_oom:
    LOG_REQ_ERR(r->request_id, "out of memory encoding a job");
    st = api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
    goto out;
}

int api_job_accepted(api_req_t *r, const q_job_t *job) { return accepted(r, job, NULL); }

int api_job_submit(api_req_t *r, const char *type, const json_t *input, int64_t wait_ms,
                   q_job_t **out)
{
    const wk_type_t *t = wk_type_find(type);
    char id[Q_ID_SIZE], *text = input ? json_dumps(input, JSON_COMPACT) : NULL;
    int outcome, rc, waiting = 0, st;
    api_waiter_t wt;
    q_job_t *job = NULL;
    q_new_job_t nj = {.type = type,
                      .queue = "default",
                      .owner = r->who.owner,
                      .input = text,
                      .max_attempts = wk_type_max_attempts(t),
                      .priority = Q_PRIORITY_DEFAULT,
                      .timeout_ms = wk_type_timeout_ms(t)};

    *out = NULL;
    if (input && !text) return api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
    rc = api_enqueue(r, &nj, id, &outcome, NULL);
    free(text);
    if (rc != 0) return api_queue_error(r, rc);
    /* registered before the job is read: an end in between is seen by that read */
    if (wait_ms > 0) waiting = api_wait_begin(r->waits, &wt, id) == 0;
    if ((st = load_job(r, id, &job, NULL)) != 0) goto out;
    if (waiting) {
        int64_t deadline = cm_mono_ms() + wait_ms, left;
        while (!q_status_terminal(job->status) && (left = deadline - cm_mono_ms()) > 0) {
            int woke = api_wait(r->waits, &wt, left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS);
            q_job_t *now;
            if (woke < 0) break;
            if ((st = load_job(r, id, &now, NULL)) != 0) goto out;
            q_job_free(job);
            job = now;
        }
    }
    *out = job;
    job = NULL;
out:
    if (waiting) api_wait_end(r->waits, &wt);
    q_job_free(job);
    return st;
}

/* ---- GET /v1/jobs/{id} ----------------------------------------------------------- */

/* Answers from the cache when it holds the job (for a long-poll, only a finished one).
 * Returns the status sent, or 0 when nothing was sent. */
static int reply_cached(api_req_t *r, int finished_only)
{
    api_cache_hit_t hit;
    if (!r->cache || !api_cache_get(r->cache, r->param, &hit)) return 0;
    if (!may_see(r, hit.owner)) return not_found(r);
    if (finished_only && !hit.terminal) return 0;
    return api_reply_text(r, 200, hit.body, hit.len, NULL);
}

/* Sends job (200, extra header lines or NULL) and, with a ticket taken before it was
 * read from Redis, offers the bytes sent to the cache. Returns the status sent. */
static int reply_job(api_req_t *r, const q_job_t *job, const char *headers,
                     const api_cache_ticket_t *t)
{
    char body[API_CACHE_BODY_MAX];
    json_t *j = q_job_to_json(job);
    size_t n;

    if (!t || (n = api_render(j, body, sizeof(body))) == 0 || n > sizeof(body))
        return api_reply(r, 200, j, headers);
    json_decref(j);
    api_cache_put(r->cache, t, job->id, job->owner, q_status_terminal(job->status), body, n);
    return api_reply_text(r, 200, body, n, headers);
}

int api_jobs_get(api_req_t *r)
{
    long long wait;
    api_waiter_t wt;
    api_cache_ticket_t tk;
    q_job_t *job = NULL;
    int st, waiting = 0, capped = 0, hot, cacheable;
    long long sub;

    if (api_query_int(r, "wait", 0, cm_cfg.max_wait_seconds, 0, &wait) != 0) return r->status;
    if (!q_valid_id(r->param)) return not_found(r);
    if (wait > 0) { /* registered before the first read: an end in between is not missed */
        waiting = api_wait_begin(r->waits, &wt, r->param) == 0;
        capped = !waiting;
    }
    if ((st = reply_cached(r, wait > 0)) != 0) goto out;
    cacheable = r->cache && (sub = api_cache_track(r->cache, r->q)) > 0 &&
                api_cache_begin(r->cache, r->param, sub, &tk) == 0;
    if ((st = load_job(r, r->param, &job, &hot)) != 0) goto out;
    cacheable = cacheable && hot; /* archived jobs are not cached */
    if (waiting) {
        int64_t deadline = cm_mono_ms() + wait * 1000, left;
        while (!q_status_terminal(job->status) && (left = deadline - cm_mono_ms()) > 0) {
            int woke = api_wait(r->waits, &wt, left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS);
            q_job_t *now;
            if (woke < 0 || (!woke && cm_mono_ms() >= deadline)) break;
            if ((st = load_job(r, r->param, &now, NULL)) != 0) goto out;
            q_job_free(job);
            job = now;
            cacheable = 0; /* only the first read is offered to the cache */
        }
    }
    st = reply_job(r, job,
                   capped && !q_status_terminal(job->status) ? "Retry-After: 1\r\n" : NULL,
                   cacheable ? &tk : NULL);
out:
    if (waiting) api_wait_end(r->waits, &wt);
    q_job_free(job);
    return st;
}

/* ---- GET /v1/jobs ---------------------------------------------------------------- */

/* 1 if a is listed before b: newer, or as new with a greater id. */
static int before(int64_t a_ms, const char *a_id, int64_t b_ms, const char *b_id)
{
    return a_ms > b_ms || (a_ms == b_ms && strcmp(a_id, b_id) > 0);
}

static int matches(const q_job_t *j, const char *status, const char *type)
{
    return (!status || (j->status && strcmp(j->status, status) == 0)) &&
           (!type || (j->type && strcmp(j->type, type) == 0));
}

/* The listing's state: Redis jobs that match, ids seen in Redis, archive rows. */
typedef struct listing {
    q_job_t **hot, **cold;
    int nhot, ncold;
    char (*seen)[Q_ID_SIZE]; /* ids of jobs present in Redis, in index order */
    int nseen;
    int truncated;           /* the Redis scan stopped at SCAN_MAX before the page filled */
    int64_t edge_ms;         /* the last index entry scanned (when truncated) */
    char edge_id[Q_ID_SIZE];
    int cold_truncated;      /* the archive reads stopped at COLD_ROUNDS before it filled */
    int64_t cold_edge_ms;    /* the last archive row read (when cold_truncated) */
    char cold_edge_id[Q_ID_SIZE];
} listing_t;

static void listing_clear(listing_t *l)
{
    for (int i = 0; i < l->nhot; i++) q_job_free(l->hot[i]);
    for (int i = 0; i < l->ncold; i++) q_job_free(l->cold[i]);
    free(l->hot);
    free(l->cold);
    free(l->seen);
}

/* Scans the owner's Redis index after the cursor for up to want matching jobs, reading
 * at most SCAN_MAX entries. Returns 0 or a Q_* error. */
static int scan_hot(api_req_t *r, listing_t *l, const char *owner, int64_t ms, const char *id,
                    const char *status, const char *type, int want)
{
    char ids[SCAN_BATCH][Q_ID_SIZE];
    int64_t created[SCAN_BATCH];
    const char *idp[SCAN_BATCH];
    q_job_t *got[SCAN_BATCH];
    int scanned = 0;

    if (!(l->hot = calloc((size_t)want, sizeof(*l->hot))) ||
        !(l->seen = calloc(SCAN_MAX, sizeof(*l->seen))))
        return Q_ENOMEM;
    while (l->nhot < want) {
        if (scanned >= SCAN_MAX) {
            l->truncated = 1;
            break;
        }
        int ask = SCAN_MAX - scanned < SCAN_BATCH ? SCAN_MAX - scanned : SCAN_BATCH;
        int n = q_owner_page(r->q, owner, ms, id, ask, ids, created), rc;
        if (n <= 0) return n;
        for (int i = 0; i < n; i++) idp[i] = ids[i];
        if ((rc = q_job_get_many(r->q, idp, n, got)) != 0) return rc;
        for (int i = 0; i < n; i++) {
            if (got[i] && l->nhot < want) {
                memcpy(l->seen[l->nseen++], ids[i], Q_ID_SIZE);
                if (matches(got[i], status, type)) {
                    l->hot[l->nhot++] = got[i];
                    got[i] = NULL;
                }
            }
            q_job_free(got[i]);
        }
        scanned += n;
        l->edge_ms = ms = created[n - 1];
        memcpy(l->edge_id, ids[n - 1], Q_ID_SIZE);
        id = l->edge_id;
        if (n < ask) break; /* the index ends here */
    }
    return 0;
}

/* 1 if a Redis job with this id was seen by the scan. */
static int seen(const listing_t *l, const char *id)
{
    for (int i = 0; i < l->nseen; i++)
        if (strcmp(l->seen[i], id) == 0) return 1;
    return 0;
}

/* Drops the archive rows from l->cold[first] on whose job is in Redis again (retried
 * after it expired): Redis lists it where it was re-created. Returns 0 or a Q_* error. */
static int drop_requeued(api_req_t *r, listing_t *l, int first)
{
    const char *ids[LIMIT_MAX + 1];
    q_job_t *got[LIMIT_MAX + 1];
    int n = first, rc, count = l->ncold - first;

    if (count <= 0) return 0;
    for (int c = 0; c < count; c++) ids[c] = l->cold[first + c]->id;
    if ((rc = q_job_get_many(r->q, ids, count, got)) != 0) return rc;
    for (int c = 0; c < count; c++) {
        if (got[c]) {
            q_job_free(l->cold[first + c]);
            q_job_free(got[c]);
        } else {
            l->cold[n++] = l->cold[first + c];
        }
    }
    l->ncold = n;
    return 0;
}

/* Reads archive rows after the cursor until want of them are kept, the archive ends, or
 * COLD_ROUNDS reads were made (then l->cold_truncated, the last row read its edge).
 * Dropped: rows Redis knows better (seen by the scan, or retried and back in Redis: with
 * a status filter many of the newest rows may be such), rows past the scanned part of
 * Redis. Returns 0, 1 when the archive cannot be read, or a Q_* error. */
static int scan_cold(api_req_t *r, listing_t *l, const char *owner, int64_t ms, const char *id,
                     const char *status, const char *type, int want)
{
    char at_id[Q_ID_SIZE];
    int rc;

    if (!(l->cold = calloc((size_t)want, sizeof(*l->cold)))) return Q_ENOMEM;
    for (int round = 0; l->ncold < want; round++) {
        q_job_t **rows = NULL;
        int first = l->ncold, n;
        if (round == COLD_ROUNDS) {
            l->cold_truncated = 1;
            l->cold_edge_ms = ms;
            memcpy(l->cold_edge_id, id, Q_ID_SIZE);
            break;
        }
        if ((n = api_archive_list(r->pg, owner, ms, id, status, type, want, &rows)) < 0) return 1;
        for (int c = 0; c < n; c++) {
            q_job_t *cj = rows[c];
            if (c == n - 1) { /* the next read starts after it */
                ms = cj->created_ms;
                memcpy(at_id, cj->id, Q_ID_SIZE);
                id = at_id;
            }
            if (l->ncold >= want || seen(l, cj->id) ||
                (l->truncated && !before(cj->created_ms, cj->id, l->edge_ms, l->edge_id)))
                q_job_free(cj);
            else
                l->cold[l->ncold++] = cj;
        }
        free(rows);
        if ((rc = drop_requeued(r, l, first)) != 0) return rc;
        if (n < want) break; /* the archive ends here */
        if (l->truncated && !before(ms, id, l->edge_ms, l->edge_id)) break; /* past Redis's edge */
    }
    return 0;
}

int api_jobs_list(api_req_t *r)
{
    const char *status = api_query(r, "status"), *type = api_query(r, "type");
    const char *cursor = api_query(r, "cursor"), *owner = api_query(r, "owner");
    char cur_id[Q_ID_SIZE], next[API_CURSOR_MAX];
    int64_t cur_ms = 0;
    long long limit;
    listing_t l = {0};
    const q_job_t *last = NULL;
    json_t *data;
    int st, rc, i = 0, j = 0, k;

    if (api_query_int(r, "limit", 1, LIMIT_MAX, LIMIT_DEFAULT, &limit) != 0) return r->status;
    if (status) {
        for (k = 0; statuses[k] && strcmp(statuses[k], status) != 0; k++) {}
        if (!statuses[k])
            return api_field_error(r, "status",
                                   "status must be one of queued, scheduled, running, "
                                   "succeeded, failed, dead, canceled");
    }
    if (type && !q_valid_type(type))
        return api_field_error(r, "type", "type is not a job type name");
    if (cursor && api_cursor_decode(cursor, &cur_ms, cur_id) != 0)
        return api_field_error(r, "cursor", "cursor is not one this API returned");
    if (owner && strcmp(owner, r->who.owner) != 0) {
        if (r->who.role != API_ROLE_ADMIN)
            return api_error(r, 403, "FORBIDDEN", NULL, NULL,
                             "only admins list other owners' jobs");
        if (!*owner || strlen(owner) >= API_OWNER_MAX)
            return api_field_error(r, "owner", "owner must be 1-%d characters",
                                   API_OWNER_MAX - 1);
    }
    if (!owner) owner = r->who.owner;

    rc = scan_hot(r, &l, owner, cur_ms, cursor ? cur_id : NULL, status, type, (int)limit + 1);
    if (rc != 0) {
        st = api_queue_error(r, rc);
        goto out;
    }
    rc = scan_cold(r, &l, owner, cur_ms, cursor ? cur_id : NULL, status, type, (int)limit + 1);
    if (rc != 0) {
        st = rc == 1 ? archive_down(r) : api_queue_error(r, rc);
        goto out;
    }
    /* the archive read up to its edge: no Redis job past it on this page either */
    while (l.cold_truncated && l.nhot > 0 &&
           !before(l.hot[l.nhot - 1]->created_ms, l.hot[l.nhot - 1]->id, l.cold_edge_ms,
                   l.cold_edge_id))
        q_job_free(l.hot[--l.nhot]);
    data = json_array();
    for (k = 0; k < limit && (i < l.nhot || j < l.ncold); k++) {
        if (j >= l.ncold || (i < l.nhot && before(l.hot[i]->created_ms, l.hot[i]->id,
                                                  l.cold[j]->created_ms, l.cold[j]->id)))
            last = l.hot[i++];
        else
            last = l.cold[j++];
        json_array_append_new(data, q_job_to_json(last));
    }
    int more = i < l.nhot || j < l.ncold || l.truncated || l.cold_truncated;
    if (more && k < limit) { /* a scan stopped early: resume where the first one stopped */
        int hot_edge = l.truncated && (!l.cold_truncated || before(l.edge_ms, l.edge_id,
                                                                   l.cold_edge_ms, l.cold_edge_id));
        api_cursor_encode(hot_edge ? l.edge_ms : l.cold_edge_ms, hot_edge ? l.edge_id : l.cold_edge_id,
                          next, sizeof(next));
    } else if (more)
        api_cursor_encode(last->created_ms, last->id, next, sizeof(next));
    st = api_reply(r, 200,
                   json_pack("{s:o,s:b,s:o}", "data", data, "hasMore", more, "nextCursor",
                             more ? json_string(next) : json_null()),
                   NULL);
out:
    listing_clear(&l);
    return st;
}

/* ---- DELETE /v1/jobs/{id}, POST /v1/jobs/{id}/retry ------------------------------- */

int api_jobs_cancel(api_req_t *r)
{
    char result[32];
    q_job_t *job = NULL;
    int st, hot, rc;

    if (!q_valid_id(r->param)) return not_found(r);
    if ((st = load_job(r, r->param, &job, &hot)) != 0) return st;
    /* The ownership check read the job: a finished one is answered without the script. */
    if (!hot || q_status_terminal(job->status)) {
        st = conflict(r, job->status, "the job already finished");
        goto out;
    }
    rc = q_cancel(r->q, r->param, result);
    changed(r, r->param);
    if (rc == Q_ECONFLICT) {
        st = conflict(r, result, "the job already finished");
    } else if (rc == Q_ENOTFOUND) {
        st = not_found(r);
    } else if (rc != 0) {
        st = api_queue_error(r, rc);
    } else {
        q_job_free(job);
        if ((st = load_job(r, r->param, &job, NULL)) == 0)
            st = api_reply(r, strcmp(result, "canceled") == 0 ? 200 : 202, q_job_to_json(job),
                           NULL);
    }
out:
    q_job_free(job);
    return st;
}

int api_jobs_retry(api_req_t *r)
{
    char status[32];
    q_job_t *job = NULL;
    json_t *body;
    int st, hot, rc;

    if (api_read_json(r, 0, &body) != 0) return r->status;
    if (body && json_object_size(body) > 0) {
        const char *k = json_object_iter_key(json_object_iter(body));
        st = api_field_error(r, k, "unknown field '%s'", k);
        json_decref(body);
        return st;
    }
    json_decref(body);
    if (!q_valid_id(r->param)) return not_found(r);
    if ((st = load_job(r, r->param, &job, &hot)) != 0) return st;
    /* The ownership check read the job: its status decides before the script runs. */
    if (strcmp(job->status, "dead") != 0 && strcmp(job->status, "failed") != 0) {
        snprintf(status, sizeof(status), "%s", job->status);
        rc = Q_ECONFLICT;
    } else if (hot) {
        rc = q_retry(r->q, r->param, status);
    } else { /* archived and expired from Redis: enqueue it again under its id */
        char id[Q_ID_SIZE];
        int outcome;
        q_new_job_t nj = {
            .id = job->id,
            .type = job->type,
            .queue = job->queue,
            .owner = job->owner,
            .input = job->input,
            .max_attempts = job->max_attempts,
            .priority = job->priority,
            .timeout_ms = job->timeout_ms,
            .idempotency_key = job->idempotency_key, /* kept on the record, not re-registered */
            .created_ms = job->created_ms,
            .history = job->history,
        };
        rc = q_enqueue(r->q, &nj, id, &outcome, NULL);
        if (rc == 0 && outcome != Q_ENQ_CREATED) rc = Q_ENOTFOUND; /* restored meanwhile */
    }
    changed(r, r->param);
    if (rc == Q_ECONFLICT) {
        st = conflict(r, status, "only dead or failed jobs can be retried");
    } else if (rc == Q_ENOTFOUND) { /* expired between the read and the retry */
        st = api_error(r, 409, "CONFLICT", NULL, NULL, "the job changed meanwhile; try again");
    } else if (rc != 0) {
        st = api_queue_error(r, rc);
    } else {
        q_job_free(job);
        if ((st = load_job(r, r->param, &job, NULL)) == 0) st = accepted(r, job, NULL);
    }
    q_job_free(job);
    return st;
}

/* ---- cursors --------------------------------------------------------------------- */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int api_cursor_encode(int64_t created_ms, const char *id, char *out, size_t outlen)
{
    char raw[64];
    int n = snprintf(raw, sizeof(raw), "%lld:%s", (long long)created_ms, id);
    size_t o = 0;
    if (n < 0 || (size_t)n >= sizeof(raw) || outlen < ((size_t)n * 4 + 2) / 3 + 1) return -1;
    for (int i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)raw[i] << 16;
        if (i + 1 < n) v |= (unsigned char)raw[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)raw[i + 2];
        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (i + 1 < n) out[o++] = b64url[(v >> 6) & 63];
        if (i + 2 < n) out[o++] = b64url[v & 63];
    }
    out[o] = '\0';
    return 0;
}

int api_cursor_decode(const char *s, int64_t *created_ms, char id[Q_ID_SIZE])
{
    char raw[64], *colon;
    size_t len = strlen(s), o = 0;
    unsigned v = 0;
    long long ms;

    if (len == 0 || len % 4 == 1 || len > (sizeof(raw) - 1) * 4 / 3) return -1;
    for (size_t i = 0; i < len; i++) {
        const char *p = strchr(b64url, s[i]);
        if (!p || !s[i]) return -1;
        v = (v << 6) | (unsigned)(p - b64url);
        if (i % 4 == 3 || i == len - 1) {
            int bits = (int)(i % 4 + 1) * 6, bytes = bits / 8;
            v <<= 24 - bits; /* align the group to 24 bits */
            for (int b = 0; b < bytes; b++) raw[o++] = (char)((v >> (16 - 8 * b)) & 0xff);
            v = 0;
        }
    }
    raw[o] = '\0';
    if (strlen(raw) != o || !(colon = strchr(raw, ':'))) return -1;
    *colon = '\0';
    if (api_parse_int(raw, 1, INT64_MAX, &ms) != 0 || !q_valid_id(colon + 1)) return -1;
    memcpy(id, colon + 1, strlen(colon + 1) + 1);
    *created_ms = ms;
    return 0;
}
