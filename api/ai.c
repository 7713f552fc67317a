/* api/ai.c — the AI catalog and GET /v1/models. */
#include "api/ai.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static struct {
    pthread_mutex_t lock;
    json_t *models; /* id -> entry */
    int64_t loaded_ms;
} cat = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The catalog (a new reference), read again when older than the TTL; NULL when it
 * cannot be read and none was ever read. */
static json_t *catalog(api_req_t *r)
{
    json_t *out = NULL;
    int64_t now = cm_mono_ms();

    pthread_mutex_lock(&cat.lock);
    if (!cat.models || now - cat.loaded_ms >= API_AI_CATALOG_TTL_MS) {
        PGconn *pg = cm_pg_acquire(r->pg, ACQUIRE_MS);
        PGresult *res = pg ? PQexec(pg, catalog_sql) : NULL;
        if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            json_t *m = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
            if (m) {
                json_decref(cat.models);
                cat.models = m;
                cat.loaded_ms = now;
            }
        } else if (pg) {
            LOG_REQ_ERR(r->request_id, "reading the AI catalog: %s", PQerrorMessage(pg));
        }
        PQclear(res);
        if (pg) cm_pg_release(r->pg, pg);
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
        json_t *names = json_array();
        size_t i;
        json_t *p;

        if (!status || strcmp(status, "disabled") == 0) continue;
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
    return api_reply(r, 200, json_pack("{s:s,s:O,s:o}", "object", "list", "data", data, "models", data),
                     NULL);
}
