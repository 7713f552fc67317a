/* cli/models.c — `conveyor models`: the AI providers and models in PostgreSQL. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "common/pg.h"

static int usage(void)
{
    fprintf(stderr,
            "usage: conveyor models list            providers and models as JSON\n"
            "       conveyor models load FILE       upsert {\"providers\":[...],\"models\":[...]}\n"
            "       conveyor models remove MODEL_ID\n"
            "provider: {name, baseUrl, apiKeyRef (\"env:NAME\"), rateLimit, rateWindowMs,\n"
            "           timeoutMs, connectTimeoutMs}\n"
            "model:    {id, name, providers [fallback order], upstreamModel, status\n"
            "           (available|deprecated|disabled), maxTokens, inputPriceMicros,\n"
            "           outputPriceMicros (micro-units per token), currency}\n");
    return 2;
}

/* Runs sql with one parameter; prints PostgreSQL's message on failure. */
static PGresult *run(PGconn *pg, const char *sql, const char *param, ExecStatusType want)
{
    PGresult *res = PQexecParams(pg, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL,
                                 NULL, 0);
    if (PQresultStatus(res) != want) {
        fprintf(stderr, "conveyor models: %s", PQerrorMessage(pg));
        PQclear(res);
        return NULL;
    }
    return res;
}

static const char upsert_providers[] =
    "INSERT INTO ai_providers AS p (name, base_url, api_key_ref, rate_limit, rate_window_ms, "
    "                               timeout_ms, connect_timeout_ms) "
    "SELECT x->>'name', x->>'baseUrl', x->>'apiKeyRef', coalesce((x->>'rateLimit')::int, 0), "
    "       coalesce((x->>'rateWindowMs')::int, 60000), coalesce((x->>'timeoutMs')::int, 60000), "
    "       coalesce((x->>'connectTimeoutMs')::int, 5000) "
    "FROM jsonb_array_elements(coalesce($1::jsonb->'providers', '[]')) x "
    "ON CONFLICT (name) DO UPDATE SET base_url = EXCLUDED.base_url, "
    "  api_key_ref = EXCLUDED.api_key_ref, rate_limit = EXCLUDED.rate_limit, "
    "  rate_window_ms = EXCLUDED.rate_window_ms, timeout_ms = EXCLUDED.timeout_ms, "
    "  connect_timeout_ms = EXCLUDED.connect_timeout_ms, updated_at = now()";

static const char upsert_models[] =
    "INSERT INTO ai_models AS m (id, display_name, providers, upstream_model, status, "
    "                            max_tokens, input_price_micros, output_price_micros, currency) "
    "SELECT x->>'id', coalesce(x->>'name', x->>'id'), "
    "       ARRAY(SELECT jsonb_array_elements_text(x->'providers')), x->>'upstreamModel', "
    "       coalesce(x->>'status', 'available'), (x->>'maxTokens')::int, "
    "       coalesce((x->>'inputPriceMicros')::bigint, 0), "
    "       coalesce((x->>'outputPriceMicros')::bigint, 0), coalesce(x->>'currency', 'USD') "
    "FROM jsonb_array_elements(coalesce($1::jsonb->'models', '[]')) x "
    "ON CONFLICT (id) DO UPDATE SET display_name = EXCLUDED.display_name, "
    "  providers = EXCLUDED.providers, upstream_model = EXCLUDED.upstream_model, "
    "  status = EXCLUDED.status, max_tokens = EXCLUDED.max_tokens, "
    "  input_price_micros = EXCLUDED.input_price_micros, "
    "  output_price_micros = EXCLUDED.output_price_micros, currency = EXCLUDED.currency, "
    "  updated_at = now()";

/* Models naming a provider that does not exist (arrays cannot carry foreign keys). */
static const char dangling[] =
    "SELECT m.id, p FROM ai_models m, unnest(m.providers) p "
    "WHERE NOT EXISTS (SELECT 1 FROM ai_providers WHERE name = p)";

static int load(PGconn *pg, const char *file)
{
    json_error_t err;
    json_t *doc = json_load_file(file, 0, &err);
    char *text = NULL;
    PGresult *res = NULL;
    int rc = 1;

    if (!doc || !json_is_object(doc)) {
        fprintf(stderr, "conveyor models: %s: %s\n", file, doc ? "not a JSON object" : err.text);
        goto out;
    }
    if (!(text = json_dumps(doc, JSON_COMPACT))) goto out;
    if (!(res = run(pg, "BEGIN", NULL, PGRES_COMMAND_OK))) goto out;
    PQclear(res);
    if (!(res = run(pg, upsert_providers, text, PGRES_COMMAND_OK))) goto rollback;
    PQclear(res);
    if (!(res = run(pg, upsert_models, text, PGRES_COMMAND_OK))) goto rollback;
    PQclear(res);
    if (!(res = run(pg, dangling, NULL, PGRES_TUPLES_OK))) goto rollback;
    if (PQntuples(res) > 0) {
        fprintf(stderr, "conveyor models: model %s names provider '%s', which does not exist\n",
                PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
        PQclear(res);
        goto rollback;
    }
    PQclear(res);
    if (!(res = run(pg, "COMMIT", NULL, PGRES_COMMAND_OK))) goto out;
    PQclear(res);
    printf("loaded %zu providers, %zu models from %s\n",
           json_array_size(json_object_get(doc, "providers")),
           json_array_size(json_object_get(doc, "models")), file);
    rc = 0;
    goto out;
rollback:
    PQclear(PQexec(pg, "ROLLBACK"));
out:
    free(text);
    json_decref(doc);
    return rc;
}

static int list(PGconn *pg)
{
    PGresult *res = run(
        pg,
        "SELECT json_build_object("
        " 'providers', coalesce((SELECT json_agg(json_build_object('name', name, 'baseUrl', "
        "   base_url, 'apiKeyRef', api_key_ref, 'rateLimit', rate_limit, 'rateWindowMs', "
        "   rate_window_ms, 'timeoutMs', timeout_ms, 'connectTimeoutMs', connect_timeout_ms) "
        "   ORDER BY name) FROM ai_providers), '[]'),"
        " 'models', coalesce((SELECT json_agg(json_build_object('id', id, 'name', display_name, "
        "   'providers', providers, 'upstreamModel', upstream_model, 'status', status, "
        "   'maxTokens', max_tokens, 'inputPriceMicros', input_price_micros, "
        "   'outputPriceMicros', output_price_micros, 'currency', currency) ORDER BY id) "
        "   FROM ai_models), '[]'))",
        NULL, PGRES_TUPLES_OK);
    if (!res) return 1;
    json_t *doc = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2)) : NULL;
    if (text) puts(text);
    free(text);
    json_decref(doc);
    PQclear(res);
    return text ? 0 : 1;
}

int cli_models(int argc, char **argv)
{
    PGconn *pg;
    int rc;

    if (argc < 2) return usage();
    if (strcmp(argv[1], "list") == 0 && argc == 2) {
    } else if ((strcmp(argv[1], "load") == 0 || strcmp(argv[1], "remove") == 0) && argc == 3) {
    } else {
        return usage();
    }
    if (!(pg = cm_pg_connect())) return 1;
    if (strcmp(argv[1], "list") == 0) {
        rc = list(pg);
    } else if (strcmp(argv[1], "load") == 0) {
        rc = load(pg, argv[2]);
    } else {
        PGresult *res = run(pg, "DELETE FROM ai_models WHERE id = $1", argv[2], PGRES_COMMAND_OK);
        rc = res && strcmp(PQcmdTuples(res), "1") == 0 ? 0 : 3;
        if (rc == 3 && res) fprintf(stderr, "conveyor models: no model %s\n", argv[2]);
        PQclear(res);
        rc = res ? rc : 1;
    }
    PQfinish(pg);
    return rc;
}
