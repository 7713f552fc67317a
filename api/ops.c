/* api/ops.c — health, readiness, queue figures. */
#include "api/ops.h"

int api_ops_healthz(api_req_t *r)
{
    return api_reply(r, 200, json_pack("{s:s}", "status", "ok"), NULL);
}

int api_ops_readyz(api_req_t *r)
{
    int redis = q_ping(r->q), pg = cm_pg_ping(r->pg), ok = redis && pg;
    return api_reply(r, ok ? 200 : 503,
                     json_pack("{s:s,s:s,s:s}", "status", ok ? "ready" : "unavailable", "redis",
                               redis ? "up" : "down", "postgres", pg ? "up" : "down"),
                     ok ? NULL : "Retry-After: 1\r\n");
}

int api_ops_queues(api_req_t *r)
{
    json_t *stats;
    int rc = q_queue_stats(r->q, &stats);
    if (rc != 0) return api_queue_error(r, rc);
    return api_reply(r, 200, json_pack("{s:o}", "data", stats), NULL);
}
