/* api/ai.c — the AI catalog and GET /v1/models. */
#include "api/ai.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/jobs.h"
#include "common/config.h"
#include "common/log.h"
#include "common/util.h"

#define ACQUIRE_MS 2000

/* One query: every model with its providers in fallback order. */
static const char catalog_sql[] =
    "SELECT coalesce(json_object_agg(m.id, json_build_object("
    "  'id', m.id, 'name', m.display_name, 'upstreamModel', coalesce(m.upstream_model, m.id), "
    "  'status', m.status, 'maxTokens', m.max_tokens, 'inputPriceMicros', m.input_price_micros, "
    "  'outputPriceMicros', m.output_price_micros, 'currency', m.currency, "
    "  'created', extract(epoch from m.created_at)::bigint, "
    "  'providers', (SELECT json_agg(json_build_object('name', p.name, 'baseUrl', p.base_url, "
    "     'apiKeyRef', p.api_key_ref, 'rateLimit', p.rate_limit, 'rateWindowMs', "
    "     p.rate_window_ms, 'timeoutMs', p.timeout_ms, 'connectTimeoutMs', "
    "     p.connect_timeout_ms) ORDER BY o.n) "
    "   FROM unnest(m.providers) WITH ORDINALITY o(name, n) "
    "   JOIN ai_providers p ON p.name = o.name))), '{}') "
    "FROM ai_models m";

#define RETRY_MS 1000 /* after a failed read, the next one no sooner than this */
#define FIRST_WAIT_S 1 /* how long a request waits for another's first read */

/* One thread reads the catalog at a time, without the lock: the others go on with the
 * copy they have (or, before the first read, wait up to FIRST_WAIT_S for it), so a slow
 * or absent PostgreSQL holds up one request thread, not all of them. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t read; /* a read ended */
    json_t *models;      /* id -> entry */
    int64_t next_ms;     /* read again from then on */
    int reading;
    /* the reading thread's alone: */
    unsigned char published[32]; /* SHA-256 of the text last handed to the workers */
    int64_t published_ms;
} cat = {.lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t cat_once = PTHREAD_ONCE_INIT;
static int cat_cond_ok;
static void cat_init(void) { cat_cond_ok = cm_cond_init_monotonic(&cat.read) == 0; }

/* Hands the catalog to the workers (P ai:catalog: they read it there, see
 * workers/types_ai.c), when it changed. A failure is logged: they keep the copy they
 * have. Called by the reading thread. */
static void publish(api_req_t *r, const char *text, int64_t now)
{
    char key[160];
    unsigned char digest[32];
    redisReply *x;

    /* unchanged: again only once a minute (a flushed Redis gets it back) */
    cm_sha256(text, strlen(text), digest);
    if (memcmp(digest, cat.published, sizeof(digest)) == 0 && now - cat.published_ms < 60000)
        return;
    snprintf(key, sizeof(key), "%sai:catalog", q_conn_prefix(r->q));
    x = q_command(r->q, "SET %s %s", key, text);
    if (x && x->type == REDIS_REPLY_STATUS) {
        memcpy(cat.published, digest, sizeof(digest));
        cat.published_ms = now;
    } else {
        LOG_REQ_WARN(r->request_id, "cannot publish the AI catalog to Redis");
    }
    freeReplyObject(x);
}

/* The catalog read from PostgreSQL (and published), or NULL. */
static json_t *read_catalog(api_req_t *r, int64_t now)
{
    PGconn *pg = cm_pg_acquire(r->pg, ACQUIRE_MS);
    PGresult *res = pg ? PQexec(pg, catalog_sql) : NULL;
    json_t *m = NULL;

    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        if ((m = json_loads(PQgetvalue(res, 0, 0), 0, NULL))) publish(r, PQgetvalue(res, 0, 0), now);
    } else if (pg) {
        LOG_REQ_ERR(r->request_id, "reading the AI catalog: %s", PQerrorMessage(pg));
    } else {
        LOG_REQ_ERR(r->request_id, "reading the AI catalog: no database connection");
    }
    PQclear(res);
    if (pg) cm_pg_release(r->pg, pg);
    return m;
}

/* The catalog (a new reference), read again when older than the TTL; NULL when it
 * cannot be read and none was ever read. */
static json_t *catalog(api_req_t *r)
{
    int64_t now = cm_mono_ms();
    json_t *out;

    pthread_once(&cat_once, cat_init);
    pthread_mutex_lock(&cat.lock);
    if (now >= cat.next_ms && !cat.reading) {
        cat.reading = 1;
        pthread_mutex_unlock(&cat.lock);
        json_t *m = read_catalog(r, now);
        pthread_mutex_lock(&cat.lock);
        cat.reading = 0;
        if (m) {
            json_decref(cat.models);
            cat.models = m;
        }
        cat.next_ms = now + (m ? API_AI_CATALOG_TTL_MS : RETRY_MS);
        if (cat_cond_ok) pthread_cond_broadcast(&cat.read);
    }
    if (!cat.models && cat.reading && cat_cond_ok) { /* the first read: wait for it, a while */
        struct timespec until;
        cm_deadline_ms(&until, FIRST_WAIT_S * 1000);
        while (!cat.models && cat.reading)
            if (pthread_cond_timedwait(&cat.read, &cat.lock, &until) == ETIMEDOUT) break;
    }
    out = json_incref(cat.models); /* a stale catalog beats none while PostgreSQL is away */
    pthread_mutex_unlock(&cat.lock);
    return out;
}

json_t *api_ai_model(api_req_t *r, const char *id, int *readable)
{
    json_t *c = catalog(r), *m;
    *readable = c != NULL;
    m = c ? json_incref(json_object_get(c, id)) : NULL;
    json_decref(c);
    return m;
}

/* Micro-units as a decimal number of currency units (30 -> 0.00003). */
static json_t *units(json_int_t micros) { return json_real((double)micros / 1e6); }

int api_models_list(api_req_t *r)
{
    json_t *c = catalog(r), *data, *m;
    const char *id;

    if (!c)
        return api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                         "the model catalog is unavailable; try again shortly");
    data = json_array();
    json_object_foreach(c, id, m) {
        const char *status = json_string_value(json_object_get(m, "status"));
        json_t *providers = json_object_get(m, "providers"), *first = json_array_get(providers, 0);
        json_int_t in = json_integer_value(json_object_get(m, "inputPriceMicros"));
        json_int_t out = json_integer_value(json_object_get(m, "outputPriceMicros"));
        json_t *names;
        size_t i;
        json_t *p;

        if (!status || strcmp(status, "disabled") == 0) continue;
        names = json_array();
        json_array_foreach(providers, i, p) json_array_append(names, json_object_get(p, "name"));
        json_array_append_new(
            data,
            json_pack("{s:s,s:s,s:O?,s:s?,s:O?,s:O?,s:o,s:s,s:O?,s:o,s:o,s:o,s:{s:I,s:I,s:O?}}",
                      "id", id,
                      "object", "model", "created", json_object_get(m, "created"), "owned_by",
                      first ? json_string_value(json_object_get(first, "name")) : "",
                      "name", json_object_get(m, "name"), "provider",
                      json_object_get(first, "name"), "providers", names,
                      "status", status, "maxTokens", json_object_get(m, "maxTokens"),
                      "costPerToken", units(in), "inputCostPerToken", units(in),
                      "outputCostPerToken", units(out), "pricing", "inputMicrosPerToken", in,
                      "outputMicrosPerToken", out, "currency", json_object_get(m, "currency")));
    }
    json_decref(c);
    return api_reply(r, 200,
                     json_pack("{s:s,s:O,s:b,s:o}", "object", "list", "data", data, "success", 1,
                               "models", data),
                     NULL);
}

/* ---- chat ------------------------------------------------------------------------ */

#define MESSAGES_MAX 1024

/* 400 naming the field (OpenAI answers bad parameters with 400 and `param`). */
static int bad(api_req_t *r, const char *field, const char *fmt, const char *arg)
{
    return api_error(r, 400, "INVALID_REQUEST", json_pack("{s:s,s:s}", "field", field, "param", field),
                     NULL, fmt, arg);
}

/* 1 if v is a number within [lo, hi]. */
static int number_in(const json_t *v, double lo, double hi)
{
    return json_is_number(v) && json_number_value(v) >= lo && json_number_value(v) <= hi;
}

/* Checks an OpenAI chat request (body) against the model; writes the field and message
 * of the first problem. Returns 0 or -1. */
static int check_request(const json_t *body, const json_t *model, char *field, size_t flen,
                         char *msg, size_t mlen)
{
    static const char *const known[] = {
        "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens",
        "n", "stream", "stop", "presence_penalty", "frequency_penalty", "user", "seed",
        "response_format", "logit_bias", "async", NULL};
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer", NULL};
    static const char *const message_keys[] = {"role", "content", "name", "tool_call_id", NULL};
    static const char *const part_keys[] = {"type", "text", NULL};
    const char *key;
    json_t *v, *msgs = json_object_get(body, "messages");
    size_t i;
    json_int_t max = json_integer_value(json_object_get(model, "maxTokens"));

#define BAD(f, ...)                                                                      \
    do {                                                                                 \
        snprintf(field, flen, "%s", f);                                                  \
        snprintf(msg, mlen, __VA_ARGS__);                                                \
        return -1;                                                                       \
    } while (0)
    if ((key = api_json_unknown_key(body, known)))
        BAD(key, "unrecognized request argument '%s'", key);
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        BAD("messages", "messages must be a non-empty array");
    if (json_array_size(msgs) > MESSAGES_MAX) BAD("messages", "at most %d messages", MESSAGES_MAX);
    json_array_foreach(msgs, i, v) {
        const char *role = json_string_value(json_object_get(v, "role"));
        json_t *content = json_object_get(v, "content"), *part;
        int ok = 0;
        size_t k;
        if (!json_is_object(v)) BAD("messages", "messages[%zu] must be an object", i);
        for (int r = 0; role && roles[r] && !ok; r++) ok = strcmp(roles[r], role) == 0;
        if (!ok)
            BAD("messages", "messages[%zu].role must be system, user, assistant, tool or developer", i);
        if ((key = api_json_unknown_key(v, message_keys)))
            BAD("messages", "messages[%zu] has an unknown field '%s'", i, key);
        for (int f = 0; f < 2; f++) {
            const char *name = f ? "tool_call_id" : "name";
            json_t *x = json_object_get(v, name);
            if (x && !json_is_string(x)) BAD("messages", "messages[%zu].%s must be a string", i, name);
        }
        if (json_is_array(content)) {
            json_array_foreach(content, k, part) {
                const char *type = json_string_value(json_object_get(part, "type"));
                if (!json_is_object(part) || !type || strcmp(type, "text") != 0 ||
                    !json_is_string(json_object_get(part, "text")) ||
                    api_json_unknown_key(part, part_keys))
                    BAD("messages", "messages[%zu].content[%zu] must be a text part "
                                    "{\"type\": \"text\", \"text\": string}", i, k);
            }
        } else if (!json_is_string(content)) {
            BAD("messages", "messages[%zu].content must be a string", i);
        }
    }
    if ((v = json_object_get(body, "temperature")) && !number_in(v, 0, 2))
        BAD("temperature", "temperature must be a number from 0 to 2");
    if ((v = json_object_get(body, "top_p")) && !number_in(v, 0, 1))
        BAD("top_p", "top_p must be a number from 0 to 1");
    for (int k = 0; k < 2; k++) {
        const char *name = k ? "max_completion_tokens" : "max_tokens";
        if ((v = json_object_get(body, name)) &&
            (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max))
            BAD(name, "%s must be an integer from 1 to %lld (the model's limit)", name,
                (long long)max);
    }
    if ((v = json_object_get(body, "n")) && !(json_is_integer(v) && json_integer_value(v) == 1))
        BAD("n", "only n = 1 is supported");
    if ((v = json_object_get(body, "stream")) && !json_is_boolean(v))
        BAD("stream", "stream must be a boolean");
    if (json_is_true(v))
        BAD("stream", "stream is not supported: completions are answered whole (or "
                      "asynchronously with Prefer: respond-async)");
    for (int k = 0; k < 2; k++) {
        const char *name = k ? "frequency_penalty" : "presence_penalty";
        if ((v = json_object_get(body, name)) && !number_in(v, -2, 2))
            BAD(name, "%s must be a number from -2 to 2", name);
    }
    if ((v = json_object_get(body, "stop")) && !json_is_string(v)) {
        json_t *s;
        if (!json_is_array(v) || json_array_size(v) > 4) BAD("stop", "stop must be a string or up to 4 strings");
        json_array_foreach(v, i, s) {
            if (!json_is_string(s)) BAD("stop", "stop must be a string or up to 4 strings");
        }
    }
    if ((v = json_object_get(body, "user")) && !json_is_string(v))
        BAD("user", "user must be a string");
    if ((v = json_object_get(body, "seed")) && !json_is_integer(v))
        BAD("seed", "seed must be an integer");
    if ((v = json_object_get(body, "async")) && !json_is_boolean(v))
        BAD("async", "async must be a boolean");
    if ((v = json_object_get(body, "response_format")) &&
        !(json_is_object(v) && json_is_string(json_object_get(v, "type"))))
        BAD("response_format", "response_format must be an object with a type");
    if ((v = json_object_get(body, "logit_bias"))) {
        json_t *bias;
        if (!json_is_object(v)) BAD("logit_bias", "logit_bias must be an object of token ids to numbers");
        json_object_foreach(v, key, bias) {
            if (!number_in(bias, -100, 100))
                BAD("logit_bias", "logit_bias values must be numbers from -100 to 100");
        }
    }
#undef BAD
    return 0;
}

/* The model called id if it exists and is not disabled (a new reference), or NULL:
 * *readable says whether the catalog could be read. */
static json_t *usable_model(api_req_t *r, const char *id, int *readable)
{
    json_t *m = api_ai_model(r, id, readable);
    const char *status = json_string_value(json_object_get(m, "status"));
    if (m && (!status || strcmp(status, "disabled") == 0)) {
        json_decref(m);
        m = NULL;
    }
    return m;
}

static int catalog_unavailable(api_req_t *r)
{
    return api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                     "the model catalog is unavailable; try again shortly");
}

/* The model named by body's "model" (a new reference), or NULL after sending 400/404/503. */
static json_t *find_model(api_req_t *r, const json_t *body, const char *field)
{
    const char *id = json_string_value(json_object_get(body, field));
    int readable;
    json_t *m;

    if (!id || !*id) return bad(r, field, "%s must be a model id (see GET /v1/models)", field), NULL;
    if (!(m = usable_model(r, id, &readable))) {
        if (!readable)
            catalog_unavailable(r);
        else
            api_error(r, 404, "NOT_FOUND", json_pack("{s:s,s:s}", "field", field, "param", field),
                      NULL, "the model '%s' does not exist", id);
    }
    return m;
}

int api_ai_check_job(api_req_t *r, const json_t *input)
{
    const char *id = json_string_value(json_object_get(input, "model"));
    const json_t *req = json_object_get(input, "request");
    char field[64], msg[256];
    int readable, st = 0;
    json_t *m = id ? usable_model(r, id, &readable) : NULL;

    if (!id || !json_is_object(req)) { /* the type's own check has refused it already */
        st = api_field_error(r, "input", "input must be {model, request}");
    } else if (!m) {
        st = readable ? api_field_error(r, "input.model", "the model '%s' does not exist", id)
                      : catalog_unavailable(r);
    } else if (json_object_get(req, "async")) {
        st = api_field_error(r, "input.request.async",
                             "async is not a chat request field (the job is asynchronous)");
    } else if (check_request(req, m, field, sizeof(field), msg, sizeof(msg)) != 0) {
        char where[96];
        snprintf(where, sizeof(where), "input.request.%s", field);
        st = api_field_error(r, where, "%s", msg);
    }
    json_decref(m);
    return st;
}

/* 1 if the caller asked for an asynchronous answer. */
static int wants_async(api_req_t *r, const json_t *body)
{
    const char *prefer = mg_get_header(r->conn, "Prefer");
    return (prefer && strstr(prefer, "respond-async")) || json_is_true(json_object_get(body, "async"));
}

/* Runs the ai.chat job for request (borrowed) of model id: 202 when async (or when the
 * answer takes longer than the caller may wait), else calls done(r, job) with the
 * succeeded job, or sends the job's error. Returns the status sent. */
static int run_chat(api_req_t *r, const char *id, json_t *request, int async,
                    int (*done)(api_req_t *r, const q_job_t *job))
{
    json_t *input = json_pack("{s:s,s:O}", "model", id, "request", request);
    q_job_t *job = NULL;
    int st;

    json_object_del(json_object_get(input, "request"), "async");
    st = api_job_submit(r, "ai.chat", input, async ? 0 : (int64_t)cm_cfg.max_wait_seconds * 1000,
                        &job);
    json_decref(input);
    if (st) return st;
    if (async || !q_status_terminal(job->status)) { /* async: 202 even if it is done */
        st = api_job_accepted(r, job);
    } else if (strcmp(job->status, "succeeded") == 0) {
        st = done(r, job);
    } else {
        json_t *err = job->error ? json_loads(job->error, 0, NULL) : NULL;
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        st = api_error(r, strcmp(job->status, "canceled") == 0 ? 409 : 502,
                       code && strcmp(code, "PROVIDER_ERROR") == 0 ? "PROVIDER_ERROR" : "PROVIDER_UNAVAILABLE",
                       json_pack("{s:s,s:s,s:s?}", "jobId", job->id, "status", job->status, "cause", code),
                       NULL, "%s", msg ? msg : "the completion failed");
        json_decref(err);
    }
    q_job_free(job);
    return st;
}

static int completion_reply(api_req_t *r, const q_job_t *job)
{
    char hdr[96];
    snprintf(hdr, sizeof(hdr), "X-Conveyor-Job-Id: %s\r\n", job->id);
    const char *body = job->result ? job->result : "{}";
    return api_reply_text(r, 200, body, strlen(body), hdr);
}

int api_chat_completions(api_req_t *r)
{
    json_t *body, *model = NULL;
    char field[64], msg[256];
    int st;

    if (api_read_json(r, 1, &body) != 0) return r->status;
    if (!(model = find_model(r, body, "model"))) {
        st = r->status;
    } else if (check_request(body, model, field, sizeof(field), msg, sizeof(msg)) != 0) {
        st = bad(r, field, "%s", msg);
    } else {
        st = run_chat(r, json_string_value(json_object_get(body, "model")), body,
                      wants_async(r, body), completion_reply);
    }
    json_decref(model);
    json_decref(body);
    return st;
}

/* The completion of job as seed 003's answer. */
static int aichat_reply(api_req_t *r, const q_job_t *job)
{
    json_t *c = json_loads(job->result, 0, NULL);
    json_t *u = json_object_get(c, "usage"), *x = json_object_get(c, "conveyor");
    const char *text = json_string_value(
        json_object_get(json_object_get(json_array_get(json_object_get(c, "choices"), 0), "message"),
                        "content"));
    char ts[40];
    int st;

    cm_format_time(job->finished_ms ? job->finished_ms : cm_now_ms(), ts, sizeof(ts));
    st = api_reply(
        r, 200,
        json_pack("{s:{s:s,s:s?,s:O?,s:{s:O?,s:O?,s:O?},s:{s:O?,s:O?,s:s},s:s}}", "data", "id",
                  job->id, "message", text, "model", json_object_get(c, "model"), "usage",
                  "promptTokens", json_object_get(u, "prompt_tokens"), "completionTokens",
                  json_object_get(u, "completion_tokens"), "totalTokens",
                  json_object_get(u, "total_tokens"), "metadata", "responseTime",
                  json_object_get(x, "latencyMs"), "provider", json_object_get(x, "provider"),
                  "jobId", job->id, "timestamp", ts),
        NULL);
    json_decref(c);
    return st;
}

int api_ai_chat(api_req_t *r)
{
    static const char *const known[] = {"message", "context", "model", "temperature", "maxTokens",
                                        "async", NULL};
    json_t *body, *model = NULL, *req = NULL, *msgs, *v;
    const char *key;
    char field[64], msg[256];
    int st;

    if (api_read_json(r, 1, &body) != 0) return r->status;
    if ((key = api_json_unknown_key(body, known))) {
        st = bad(r, key, "unknown field '%s'", key);
        goto out;
    }
    if (!json_is_string(json_object_get(body, "message")) ||
        !*json_string_value(json_object_get(body, "message"))) {
        st = bad(r, "message", "%s", "message must be a non-empty string");
        goto out;
    }
    if (!(model = find_model(r, body, "model"))) {
        st = r->status;
        goto out;
    }
    /* context: earlier messages, or anything else as a system note */
    msgs = json_array();
    v = json_object_get(body, "context");
    if (json_is_array(v)) {
        json_array_extend(msgs, v);
    } else if (json_is_string(v)) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", v));
    } else if (v && !json_is_null(v)) {
        char *text = json_dumps(v, JSON_COMPACT);
        json_array_append_new(msgs, json_pack("{s:s,s:s+}", "role", "system", "content",
                                              "Context: ", text ? text : ""));
        free(text);
    }
    json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content",
                                          json_object_get(body, "message")));
    req = json_pack("{s:O,s:o}", "model", json_object_get(body, "model"), "messages", msgs);
    if ((v = json_object_get(body, "temperature"))) json_object_set(req, "temperature", v);
    if ((v = json_object_get(body, "maxTokens"))) json_object_set(req, "max_tokens", v);
    if (check_request(req, model, field, sizeof(field), msg, sizeof(msg)) != 0) {
        st = bad(r, strcmp(field, "max_tokens") == 0 ? "maxTokens" : strcmp(field, "messages") == 0 ? "context" : field,
                 "%s", msg);
        goto out;
    }
    st = run_chat(r, json_string_value(json_object_get(body, "model")), req, wants_async(r, body),
                  aichat_reply);
out:
    json_decref(req);
    json_decref(model);
    json_decref(body);
    return st;
}
