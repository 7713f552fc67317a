/* api/ai.h — the AI catalog: models and their providers (sql/003), as the api serves them.
 *
 * The catalog is read from PostgreSQL at most once every API_AI_CATALOG_TTL_MS per
 * process (a model added with `conveyor models load` shows within that time). */
#ifndef API_AI_H
#define API_AI_H

#include "api/http.h"

#define API_AI_CATALOG_TTL_MS 2000

/* GET /v1/models: models not disabled, in both OpenAI's list shape (object, data) and
 * the seed's (models), with provider, status, prices and maxTokens. */
int api_models_list(api_req_t *r);

/* The model called id, as a new reference to its catalog entry (id, name, providers
 * [{name, baseUrl, apiKeyRef, rateLimit, rateWindowMs, timeoutMs, connectTimeoutMs}],
 * upstreamModel, status, maxTokens, inputPriceMicros, outputPriceMicros, currency), or
 * NULL: *found says whether the catalog could be read (0: 503) or the model is unknown. */
json_t *api_ai_model(api_req_t *r, const char *id, int *readable);

/* POST /v1/jobs of type ai.chat: input {model, request} checked as POST
 * /v1/chat/completions checks its body (the model exists and is not disabled, the
 * request is one the model takes). Returns 0, or the status sent: 422 naming the field
 * (input.model, input.request.<field>), 503 when the catalog cannot be read. */
int api_ai_check_job(api_req_t *r, const json_t *input);

/* POST /v1/chat/completions: OpenAI-compatible; synchronous (the front waits on an
 * ai.chat job, up to CONVEYOR_MAX_WAIT_SECONDS, then 202) unless `Prefer: respond-async`
 * or "async": true (202 + Location at once). stream:true is refused (400). */
int api_chat_completions(api_req_t *r);

/* POST /v1/ai/chat: seed 003's shape on the same job type. */
int api_ai_chat(api_req_t *r);

#endif
