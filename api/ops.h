/* api/ops.h — operations endpoints (API.md "Operations") and queue figures. */
#ifndef API_OPS_H
#define API_OPS_H

#include "api/http.h"

/* GET /healthz: 200 {"status":"ok"} while the process serves. */
int api_ops_healthz(api_req_t *r);
/* GET /readyz: 200 when Redis and PostgreSQL answer, else 503 naming what is down. */
int api_ops_readyz(api_req_t *r);
/* GET /v1/queues (admin): {"data":[per-queue figures]}. */
int api_ops_queues(api_req_t *r);

#endif
