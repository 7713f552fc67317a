/* api/route.h — the routing table: method + path to a handler.
 *
 * /v1/... is canonical; /api/v1/... and /api/... are aliases of it. One trailing slash
 * is ignored. A path segment "{id}" in a pattern captures that segment. */
#ifndef API_ROUTE_H
#define API_ROUTE_H

#include <stddef.h>

#include "api/http.h"

/* API_AUTH_OPTIONAL: a credential is checked when given; without one the request is
 * anonymous (and counts against the route's bucket). */
enum { API_AUTH_NONE = 0, API_AUTH_USER = 1, API_AUTH_ADMIN = 2, API_AUTH_OPTIONAL = 3 };

typedef struct api_route {
    const char *method;
    const char *pattern;
    int (*handler)(api_req_t *r); /* returns the status it sent */
    int auth;                     /* API_AUTH_* */
    const char *const *query;     /* query parameters accepted (NULL-terminated) or NULL */
    int bucket;                   /* api_bucket_t of anonymous requests (API_RL_NONE: none) */
} api_route_t;

/* Finds the route for method and path (borrowed). On a match copies the {id} segment
 * into param (size plen; "" when it does not fit) and returns the route (static).
 * Otherwise returns NULL with allow (size alen) holding the methods the path accepts
 * ("GET, DELETE"; a 405), or "" when no route has that path (a 404). */
const api_route_t *api_route_find(const char *method, const char *path, char *param,
                                  size_t plen, char *allow, size_t alen);

#endif
