/* api/gate.h — the door of every request: credentials and rate limits (see auth.h for
 * the scheme), and the Redis side of revoking sessions and API keys. */
#ifndef API_GATE_H
#define API_GATE_H

#include "api/http.h"

/* Checks r for a route needing auth (API_AUTH_* of route.h) whose unauthenticated
 * requests count against bucket (API_RL_AUTH, API_RL_IP or API_RL_NONE). Fills r->who and
 * r->limit_headers. Returns 0 to go on, or the status of the error it sent: 401, 403,
 * 429, 503. */
int api_gate(api_req_t *r, int auth, api_bucket_t bucket);

/* Ends sessions at once: their access tokens are refused from now on (the marker lives
 * as long as an access token can), in every api process (announced on the auth
 * channel). Returns 0 or -1 (Redis unreachable). */
int api_revoke_sessions(api_req_t *r, char *const *sids, int n);

/* Caches an API key for the gate (id NULL: a tombstone, the key is refused). force
 * overwrites what is there (revocation; announced on the auth channel). Returns 0 or
 * -1. */
int api_apikey_cache(api_req_t *r, const char *key_sha, const char *id, const char *user,
                     api_role_t role, int64_t exp_ms, int force);

/* Drops cached API keys (their owner's role changed: the next use reloads them).
 * Returns 0 or -1. */
int api_apikey_forget(api_req_t *r, char *const *key_shas, int n);

/* The auth channel ("<prefix>:ch:auth") into out (size n). */
void api_auth_channel(char *out, size_t n, const char *prefix);

/* Starts the thread that adds the requests counted locally (authcache.h) to Redis every
 * few milliseconds. Returns 0 or -1. */
int api_gate_flusher_start(api_authcache_t *auth);
/* Flushes what is left and stops it. */
void api_gate_flusher_stop(void);

#endif
