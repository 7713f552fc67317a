/* workers/types_ai.c — ai.chat: one OpenAI-compatible chat completion.
 *
 * Input: {"model": id, "request": {OpenAI chat request}}. The model's providers come from
 * the AI catalog the api publishes in Redis (P ai:catalog, JSON: id -> model with its
 * providers in fallback order; see api/ai.c); each worker keeps a copy for
 * CATALOG_TTL_MS, and reads it again before it fails a job whose model its copy lacks
 * (or has disabled). An attempt tries the providers in order:
 *   - a provider with a rate limit first reserves a slot in a sliding window shared by
 *     every worker (P ai:rate:<provider>, one Lua call); no slot: the next provider,
 *     and when every provider left is limited (or failed), a wait for the slot that
 *     frees first;
 *   - 2xx: the completion is the job's result (with "model" set to the requested id and
 *     a "conveyor" member: provider, latencyMs, the providers tried);
 *   - 408, 429, 5xx, timeouts and connection errors: the next provider; after the last,
 *     a retryable failure (after the provider's Retry-After when it sent one, an hour
 *     at most);
 *   - 401, 403, 404 (this provider refuses the key or does not serve the model): the
 *     next provider; when every provider refused, PROVIDER_ERROR, not retried;
 *   - any other 4xx: PROVIDER_ERROR with the provider's message, not retried.
 * All HTTP goes through one libcurl multi handle on the worker's loop (workers/http.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "workers/http.h"
#include "workers/types.h"

#define CATALOG_TTL_MS 2000
#define RESPONSE_MAX (8u << 20)
#define RATE_MARGIN_MS 50   /* reserve slots this much apart beyond the window: requests
                             * reserved W apart may reach the provider a little closer */
#define REDIS_TIMEOUT_MS 2000
#define AI_TIMEOUT_MS 600000 /* one attempt, every provider tried included */
#define RETRY_AFTER_MAX_MS 3600000 /* a provider's Retry-After is followed up to an hour */

/* Reserves a request slot: KEYS[1] the provider's window, ARGV window ms, limit, member.
 * Returns 0 (reserved) or the ms until one frees. Redis's clock: every worker agrees. */
static const char rate_lua[] =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
    "local win, lim = tonumber(ARGV[1]), tonumber(ARGV[2]) "
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win) "
    "if redis.call('ZCARD', KEYS[1]) < lim then "
    "  redis.call('ZADD', KEYS[1], now, ARGV[3]) "
    "  redis.call('PEXPIRE', KEYS[1], win) "
    "  return 0 "
    "end "
    "local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES') "
    "return math.max(1, tonumber(oldest[2]) + win - now)";

/* ---- per process: the HTTP client and the catalog -------------------------------- */

typedef struct ai_call ai_call_t;

static struct {
    wk_http_t *http;
    json_t *catalog;       /* id -> model */
    uint64_t loaded;       /* loop time of the catalog */
    int reading;           /* a GET of the catalog is in flight */
    ai_call_t *waiting;    /* calls waiting for it */
    ai_call_t *again;      /* calls that need a read begun after the one in flight */
    unsigned long long seq; /* rate window members */
} ai;

static void ai_close(void)
{
    wk_http_free(ai.http); /* calls in flight are called back with ECANCELED */
    ai.http = NULL;
    json_decref(ai.catalog);
    ai.catalog = NULL;
}

/* ---- one call -------------------------------------------------------------------- */

struct ai_call {
    wk_job_t *job;
    json_t *model;      /* the catalog entry */
    json_t *tried;      /* [{provider, status|error, ms}] */
    char *body;         /* the request sent to providers */
    size_t body_len;
    size_t provider;    /* index in model.providers */
    uint64_t failed;    /* providers (bit i: index i < 64) that failed this attempt */
    int limited;        /* a provider had no rate-limit slot: ... */
    size_t limited_provider; /* ... the one whose slot frees first, */
    long long limited_ms;    /* in this many ms */
    long long retry_after_ms; /* the longest Retry-After heard, -1: none */
    int unavailable;    /* a provider failed in a way that may pass (else: all refused) */
    char last_error[256];
    wk_http_call_t *http;
    uv_timer_t timer;   /* a rate-limit wait */
    int timer_on, stopping;
    int reread;         /* the catalog was read again for this call */
    ai_call_t *next;    /* waiting for the catalog */
};

static void call_closed(uv_handle_t *h)
{
    ai_call_t *c = h->data;
    json_decref(c->model);
    json_decref(c->tried);
    free(c->body);
    free(c);
}

/* Detaches c from its job (the caller completes the job next) and frees it. */
static void call_end(ai_call_t *c)
{
    wk_job_set_data(c->job, NULL);
    uv_close((uv_handle_t *)&c->timer, call_closed);
}

static void fail(ai_call_t *c, const char *code, const char *msg, int retryable,
                 long long after_ms)
{
    wk_job_t *job = c->job;
    call_end(c);
    wk_job_fail(job, code, msg, retryable, after_ms);
}

static void try_provider(ai_call_t *c);

/* The provider c->provider failed in a way another may not: record it, go on. refused:
 * it refused this caller or model (401, 403, 404), which a later attempt would not
 * change; the others may pass. */
static void next_provider_as(ai_call_t *c, const char *what, long long after_ms, int refused)
{
    snprintf(c->last_error, sizeof(c->last_error), "%.*s", (int)sizeof(c->last_error) - 1, what);
    if (!refused) c->unavailable = 1;
    if (after_ms > c->retry_after_ms) c->retry_after_ms = after_ms;
    if (c->provider < 64) c->failed |= (uint64_t)1 << c->provider;
    c->provider++;
    try_provider(c);
}

static void next_provider(ai_call_t *c, const char *what, long long after_ms)
{
    next_provider_as(c, what, after_ms, 0);
}

static json_t *provider_at(const ai_call_t *c)
{
    return json_array_get(json_object_get(c->model, "providers"), c->provider);
}

/* The provider's error message from an OpenAI error body, else the body's start. */
static void provider_message(const wk_http_resp_t *resp, char *out, size_t n)
{
    json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    if (!m) m = json_string_value(json_object_get(j, "message"));
    if (m)
        snprintf(out, n, "provider answered %ld: %s", resp->status, m);
    else
        snprintf(out, n, "provider answered %ld: %.*s", resp->status,
                 (int)(resp->body_len > 200 ? 200 : resp->body_len), resp->body);
    json_decref(j);
}

static void on_response(void *arg, const wk_http_resp_t *resp)
{
    ai_call_t *c = arg;
    json_t *p = provider_at(c), *out;
    const char *pname = json_string_value(json_object_get(p, "name"));
    char msg[512];

    c->http = NULL;
    if (resp->err == WK_HTTP_ECANCELED || c->stopping) {
        wk_job_t *job = c->job;
        call_end(c);
        wk_job_canceled(job);
        return;
    }
    json_array_append_new(c->tried,
                          json_pack("{s:s?,s:I,s:s?,s:i}", "provider", pname, "status",
                                    (json_int_t)resp->status, "error",
                                    resp->err ? resp->error : NULL, "ms", (int)resp->total_ms));
    if (resp->err != WK_HTTP_OK) {
        snprintf(msg, sizeof(msg), "provider %s: %s", pname ? pname : "?",
                 resp->error ? resp->error : "request failed");
        next_provider(c, msg, -1);
        return;
    }
    if (resp->status == 408 || resp->status == 429 || resp->status >= 500) {
        provider_message(resp, msg, sizeof(msg));
        next_provider(c, msg, resp->retry_after_ms > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS
                                                                       : resp->retry_after_ms);
        return;
    }
    if (resp->status == 401 || resp->status == 403 || resp->status == 404) {
        provider_message(resp, msg, sizeof(msg)); /* its key, region or models: another */
        next_provider_as(c, msg, -1, 1);           /* provider may take the request */
        return;
    }
    if (resp->status < 200 || resp->status >= 300) {
        provider_message(resp, msg, sizeof(msg));
        fail(c, "PROVIDER_ERROR", msg, 0, -1);
        return;
    }
    out = json_loadb(resp->body, resp->body_len, 0, NULL);
    if (!json_is_object(out) || !json_is_array(json_object_get(out, "choices"))) {
        json_decref(out);
        snprintf(msg, sizeof(msg), "provider %s answered 2xx without a completion",
                 pname ? pname : "?");
        next_provider(c, msg, -1);
        return;
    }
    json_object_set(out, "model", json_object_get(c->model, "id"));
    json_object_set_new(out, "conveyor",
                        json_pack("{s:s?,s:i,s:O}", "provider", pname, "latencyMs",
                                  (int)resp->total_ms, "tried", c->tried));
    wk_job_t *job = c->job;
    call_end(c);
    wk_job_succeed(job, out);
}

/* Sends the request to the current provider (its slot reserved when it has a limit). */
static void send_request(ai_call_t *c)
{
    json_t *p = provider_at(c);
    const char *base = json_string_value(json_object_get(p, "baseUrl"));
    const char *ref = json_string_value(json_object_get(p, "apiKeyRef"));
    char url[1024], auth[1024];
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    wk_http_req_t req = {.method = "POST",
                         .url = url,
                         .body = c->body,
                         .body_len = c->body_len,
                         .headers = headers,
                         .connect_timeout_ms = (long)json_integer_value(
                             json_object_get(p, "connectTimeoutMs")),
                         .timeout_ms = (long)json_integer_value(json_object_get(p, "timeoutMs")),
                         .max_response = RESPONSE_MAX};

    snprintf(url, sizeof(url), "%s/chat/completions", base ? base : "");
    if (ref && strncmp(ref, "env:", 4) == 0) {
        const char *key = getenv(ref + 4);
        if (!key || !*key) {
            snprintf(auth, sizeof(auth), "provider %s: %s is not set in the worker's "
                                         "environment", json_string_value(json_object_get(p, "name")),
                     ref + 4);
            next_provider(c, auth, -1);
            return;
        }
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
        headers[1] = auth;
    }
    if (!ai.http && !(ai.http = wk_http_new(wk_job_loop(c->job), 0))) {
        fail(c, "INTERNAL_ERROR", "cannot start the HTTP client", 1, -1);
        return;
    }
    c->http = wk_http_start(ai.http, &req, on_response, c);
    if (headers[1]) memset(auth, 0, sizeof(auth)); /* the key leaves no copy here */
    if (!c->http) fail(c, "INTERNAL_ERROR", "cannot start an HTTP request", 1, -1);
}

static void reserve(ai_call_t *c);

static void on_rate_timer(uv_timer_t *t)
{
    ai_call_t *c = t->data;
    c->timer_on = 0;
    if (c->stopping) {
        wk_job_t *job = c->job;
        call_end(c);
        wk_job_canceled(job);
        return;
    }
    reserve(c);
}

static void on_reserved(wk_redis_t *r, redisReply *reply, void *data)
{
    ai_call_t *c = data;
    (void)r;
    if (c->stopping) {
        wk_job_t *job = c->job;
        call_end(c);
        wk_job_canceled(job);
        return;
    }
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        fail(c, "RATE_LIMIT_UNAVAILABLE", "cannot reserve a provider slot in Redis", 1, -1);
        return;
    }
    if (reply->integer == 0) {
        send_request(c);
        return;
    }
    /* no slot here now: a later provider may have one; wait only when none has */
    if (!c->limited || reply->integer < c->limited_ms) {
        c->limited = 1;
        c->limited_provider = c->provider;
        c->limited_ms = reply->integer;
    }
    c->provider++;
    try_provider(c);
}

/* Reserves a slot of the current provider's rate limit, then sends. */
static void reserve(ai_call_t *c)
{
    json_t *p = provider_at(c);
    json_int_t limit = json_integer_value(json_object_get(p, "rateLimit"));
    char key[200], win[24], lim[24], member[96];

    if (limit <= 0) {
        send_request(c);
        return;
    }
    snprintf(key, sizeof(key), "%sai:rate:%s", wk_job_prefix(c->job),
             json_string_value(json_object_get(p, "name")));
    snprintf(win, sizeof(win), "%lld",
             (long long)json_integer_value(json_object_get(p, "rateWindowMs")) + RATE_MARGIN_MS);
    snprintf(lim, sizeof(lim), "%lld", (long long)limit);
    snprintf(member, sizeof(member), "%s:%d:%llu", wk_job_id(c->job), wk_job_attempt(c->job),
             ai.seq++);
    const char *argv[] = {"EVAL", rate_lua, "1", key, win, lim, member};
    if (wk_redis_command(wk_job_redis(c->job), 7, argv, NULL, REDIS_TIMEOUT_MS, on_reserved, c) != 0)
        fail(c, "RATE_LIMIT_UNAVAILABLE", "Redis is unreachable", 1, -1);
}

static void try_provider(ai_call_t *c)
{
    while (provider_at(c) && c->provider < 64 && (c->failed >> c->provider & 1)) c->provider++;
    if (!provider_at(c) && c->limited) { /* the others failed or are limited too: wait for */
        c->provider = c->limited_provider; /* the slot that frees first */
        c->limited = 0;
        c->timer_on = 1;
        uv_timer_start(&c->timer, on_rate_timer, (uint64_t)c->limited_ms, 0);
        return;
    }
    if (!provider_at(c)) { /* every provider failed this attempt */
        char msg[300];
        snprintf(msg, sizeof(msg), "%s", c->last_error[0] ? c->last_error : "no provider");
        if (c->unavailable || !c->last_error[0])
            fail(c, "PROVIDER_UNAVAILABLE", msg, 1, c->retry_after_ms);
        else /* every provider refused it */
            fail(c, "PROVIDER_ERROR", msg, 0, -1);
        return;
    }
    reserve(c);
}

static void on_catalog(wk_redis_t *r, redisReply *reply, void *data);

/* Reads the catalog from Redis for the calls in ai.waiting (c: one of them). */
static void read_catalog(ai_call_t *c)
{
    char key[200];
    snprintf(key, sizeof(key), "%sai:catalog", wk_job_prefix(c->job));
    const char *argv[] = {"GET", key};
    ai.reading = 1;
    if (wk_redis_command(wk_job_redis(c->job), 2, argv, NULL, REDIS_TIMEOUT_MS, on_catalog, NULL) != 0)
        on_catalog(NULL, NULL, NULL); /* not connected: every waiting call is told */
}

/* The model is known: build the provider request and start with the first provider. */
static void begin(ai_call_t *c)
{
    const json_t *in = wk_job_input(c->job);
    const char *id = json_string_value(json_object_get(in, "model"));
    json_t *req;

    c->model = json_incref(json_object_get(ai.catalog, id));
    const char *status = json_string_value(json_object_get(c->model, "status"));
    if (!c->model || !status || strcmp(status, "disabled") == 0) {
        char msg[200];
        if (!c->reread) { /* our copy may predate the model (or its re-enabling): read again */
            json_decref(c->model);
            c->model = NULL;
            c->reread = 1;
            if (ai.reading) { /* begun before: maybe before the api published the change */
                c->next = ai.again;
                ai.again = c;
            } else {
                c->next = ai.waiting;
                ai.waiting = c;
                read_catalog(c);
            }
            return;
        }
        snprintf(msg, sizeof(msg), "%s model '%s'", c->model ? "disabled" : "unknown", id);
        fail(c, c->model ? "MODEL_DISABLED" : "MODEL_NOT_FOUND", msg, 0, -1);
        return;
    }
    req = json_deep_copy(json_object_get(in, "request"));
    json_object_set(req, "model", json_object_get(c->model, "upstreamModel"));
    c->body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!c->body) {
        fail(c, "INTERNAL_ERROR", "out of memory", 1, -1);
        return;
    }
    c->body_len = strlen(c->body);
    try_provider(c);
}

static void on_catalog(wk_redis_t *r, redisReply *reply, void *data)
{
    (void)r;
    (void)data;
    ai_call_t *list = ai.waiting;
    json_t *cat = reply && reply->type == REDIS_REPLY_STRING
                      ? json_loadb(reply->str, reply->len, 0, NULL)
                      : NULL;
    int read = json_is_object(cat);
    ai.reading = 0;
    ai.waiting = NULL;
    if (read) {
        json_decref(ai.catalog);
        ai.catalog = cat;
        ai.loaded = list ? uv_now(wk_job_loop(list->job)) : 0;
    } else {
        json_decref(cat);
        if (reply && reply->type == REDIS_REPLY_NIL)
            LOG_WARN("ai.chat: no AI catalog in Redis yet (the api publishes it)");
    }
    while (list) {
        ai_call_t *c = list;
        list = c->next;
        c->next = NULL;
        if (c->stopping) {
            wk_job_t *job = c->job;
            call_end(c);
            wk_job_canceled(job);
        } else if (!ai.catalog || (c->reread && !read)) { /* a call reading again needs this read */
            fail(c, "CATALOG_UNAVAILABLE", "the AI catalog cannot be read from Redis", 1, -1);
        } else {
            begin(c);
        }
    }
    if (ai.again && !ai.reading) {
        ai.waiting = ai.again;
        ai.again = NULL;
        read_catalog(ai.waiting);
    }
}

static int ai_validate(const json_t *input, char *field, size_t flen, char *msg, size_t mlen)
{
    static const char *const keys[] = {"model", "request", NULL};
    const json_t *req = json_object_get(input, "request");
    if (wk_input_only(input, keys, field, flen, msg, mlen)) return -1;
    if (!json_is_string(json_object_get(input, "model"))) {
        snprintf(field, flen, "input.model");
        snprintf(msg, mlen, "input.model must be a model id");
        return -1;
    }
    if (!json_is_object(req) || !json_is_array(json_object_get(req, "messages"))) {
        snprintf(field, flen, "input.request");
        snprintf(msg, mlen, "input.request must be a chat request with messages");
        return -1;
    }
    return 0;
}

static void ai_start(wk_job_t *job)
{
    ai_call_t *c = calloc(1, sizeof(*c));
    uv_loop_t *loop = wk_job_loop(job);

    if (!c || !(c->tried = json_array())) {
        free(c);
        wk_job_fail(job, "INTERNAL_ERROR", "out of memory", 1, -1);
        return;
    }
    c->job = job;
    c->retry_after_ms = -1;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    wk_job_set_data(job, c);
    if (ai.catalog && uv_now(loop) - ai.loaded < CATALOG_TTL_MS) {
        begin(c);
        return;
    }
    c->next = ai.waiting;
    ai.waiting = c;
    if (!ai.reading) read_catalog(c);
}

static void ai_cancel(wk_job_t *job)
{
    ai_call_t *c = wk_job_data(job);
    if (!c || c->stopping) return;
    c->stopping = 1;
    if (c->http) {
        wk_http_cancel(c->http); /* on_response ends it as canceled */
    } else if (c->timer_on) {
        uv_timer_stop(&c->timer);
        c->timer_on = 0;
        call_end(c);
        wk_job_canceled(job);
    }
    /* else a Redis reply is due (catalog or reservation): its callback ends it */
}

const wk_type_t wk_type_ai_chat = {
    .name = "ai.chat",
    .validate = ai_validate,
    .start = ai_start,
    .cancel = ai_cancel,
    .timeout_ms = AI_TIMEOUT_MS,
    .max_attempts = 4,
    .close = ai_close,
};
