/* api/route.c — the routing table. */
#include "api/route.h"

#include <stdio.h>
#include <string.h>

#include "api/accounts.h"
#include "api/ai.h"
#include "api/jobs.h"
#include "api/ops.h"

static const char *const q_get_job[] = {"wait", NULL};
static const char *const q_list_jobs[] = {"status", "type", "limit", "cursor", "owner", NULL};

static const api_route_t routes[] = {
    {"POST", "/v1/jobs", api_jobs_create, API_AUTH_USER, NULL, API_RL_NONE},
    {"GET", "/v1/jobs", api_jobs_list, API_AUTH_USER, q_list_jobs, API_RL_NONE},
    {"GET", "/v1/jobs/{id}", api_jobs_get, API_AUTH_USER, q_get_job, API_RL_NONE},
    {"DELETE", "/v1/jobs/{id}", api_jobs_cancel, API_AUTH_USER, NULL, API_RL_NONE},
    {"POST", "/v1/jobs/{id}/retry", api_jobs_retry, API_AUTH_USER, NULL, API_RL_NONE},
    {"GET", "/v1/queues", api_ops_queues, API_AUTH_ADMIN, NULL, API_RL_NONE},
    {"POST", "/v1/auth/register", api_auth_register, API_AUTH_NONE, NULL, API_RL_AUTH},
    {"POST", "/v1/auth/login", api_auth_login, API_AUTH_NONE, NULL, API_RL_AUTH},
    {"POST", "/v1/auth/refresh", api_auth_refresh, API_AUTH_NONE, NULL, API_RL_IP},
    {"POST", "/v1/auth/logout", api_auth_logout, API_AUTH_USER, NULL, API_RL_NONE},
    {"POST", "/v1/auth/api-keys", api_keys_create, API_AUTH_USER, NULL, API_RL_NONE},
    {"GET", "/v1/auth/api-keys", api_keys_list, API_AUTH_USER, NULL, API_RL_NONE},
    {"DELETE", "/v1/auth/api-keys/{id}", api_keys_delete, API_AUTH_USER, NULL, API_RL_NONE},
    {"POST", "/v1/users", api_users_create, API_AUTH_OPTIONAL, NULL, API_RL_AUTH},
    /* {id} may be "me" or "profile": the caller */
    {"GET", "/v1/users/{id}", api_users_get, API_AUTH_USER, NULL, API_RL_NONE},
    {"PUT", "/v1/users/{id}", api_users_update, API_AUTH_USER, NULL, API_RL_NONE},
    {"DELETE", "/v1/users/{id}", api_users_delete, API_AUTH_USER, NULL, API_RL_NONE},
    {"GET", "/v1/models", api_models_list, API_AUTH_USER, NULL, API_RL_NONE},
    {"POST", "/v1/chat/completions", api_chat_completions, API_AUTH_USER, NULL, API_RL_NONE},
    {"POST", "/v1/ai/chat", api_ai_chat, API_AUTH_USER, NULL, API_RL_NONE},
    {"GET", "/healthz", api_ops_healthz, API_AUTH_NONE, NULL, API_RL_NONE},
    {"GET", "/readyz", api_ops_readyz, API_AUTH_NONE, NULL, API_RL_NONE},
};

/* Matches path (length n) against pattern; copies the {id} segment into param. */
static int match(const char *pattern, const char *path, size_t n, char *param, size_t plen)
{
    const char *p = path, *end = path + n;
    while (*pattern) {
        if (strncmp(pattern, "{id}", 4) == 0) {
            size_t len = strcspn(p, "/");
            if (p + len > end) len = (size_t)(end - p);
            if (len == 0) return 0;
            if (len < plen) {
                memcpy(param, p, len);
                param[len] = '\0';
            } else if (plen) {
                param[0] = '\0';
            }
            p += len;
            pattern += 4;
        } else {
            if (p == end || *p != *pattern) return 0;
            p++;
            pattern++;
        }
    }
    return p == end;
}

const api_route_t *api_route_find(const char *method, const char *path, char *param,
                                  size_t plen, char *allow, size_t alen)
{
    const char *canon = ""; /* the prefix the path's alias stands for */
    size_t n, used = 0;

    if (plen) param[0] = '\0';
    if (alen) allow[0] = '\0';
    /* /api/v1/x and /api/x are /v1/x */
    if (strncmp(path, "/api/", 5) == 0) {
        path += strncmp(path + 5, "v1/", 3) == 0 ? 7 : 4;
        canon = "/v1";
    }
    n = strlen(path);
    if (n > 1 && path[n - 1] == '/') n--;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const api_route_t *rt = &routes[i];
        size_t cl = strlen(canon);
        if (strncmp(rt->pattern, canon, cl) != 0 || !match(rt->pattern + cl, path, n, param, plen))
            continue;
        if (strcmp(rt->method, method) == 0) return rt;
        if (used < alen)
            used += (size_t)snprintf(allow + used, alen - used, "%s%s", used ? ", " : "",
                                     rt->method);
    }
    return NULL;
}
