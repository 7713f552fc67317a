/* api/accounts.h — users, sign-in and API keys (PostgreSQL tables of sql/002).
 *
 * Sign-in: register, login (argon2id password check) → a session: a JWT access token
 * naming it (`sid`) and an opaque refresh token ("rt_...") stored by digest. Each refresh
 * rotates the refresh token; presenting a rotated one again revokes the session (its
 * family). Logout revokes the session. A revoked session's access tokens are refused at
 * once through the Redis marker the gate checks (api/gate.h).
 * API keys: "ak_live_" + 40 base62, shown once, stored by digest; a user manages them
 * with an access token (not with a key). Handlers follow api/http.h: they return the
 * status they sent. */
#ifndef API_ACCOUNTS_H
#define API_ACCOUNTS_H

#include "api/http.h"

/* POST /v1/auth/register, /login, /refresh, /logout */
int api_auth_register(api_req_t *r);
int api_auth_login(api_req_t *r);
int api_auth_refresh(api_req_t *r);
int api_auth_logout(api_req_t *r);

/* POST /v1/auth/api-keys, GET /v1/auth/api-keys, DELETE /v1/auth/api-keys/{id} */
int api_keys_create(api_req_t *r);
int api_keys_list(api_req_t *r);
int api_keys_delete(api_req_t *r);

/* POST /v1/users, and GET/PUT/DELETE /v1/users/{id} ({id} "me" or "profile": the caller) */
int api_users_create(api_req_t *r);
int api_users_get(api_req_t *r);
int api_users_update(api_req_t *r);
int api_users_delete(api_req_t *r);

/* ---- shared by accounts.c and users.c -------------------------------------------- */

/* The columns api_user_json reads, in its order (one SQL fragment, table alias u). */
#define API_USER_COLS                                                                   \
    "u.id, u.email, u.username, u.first_name, u.last_name, u.name, u.role, u.is_active, " \
    "u.preferences::text, (extract(epoch from u.created_at) * 1000)::bigint, "           \
    "(extract(epoch from u.updated_at) * 1000)::bigint"
#define API_USER_NCOLS 11

/* The user object of row (columns API_USER_COLS from col on). NULL on OOM. */
json_t *api_user_json(const PGresult *res, int row, int col);

/* 1 if s is an acceptable email address (3-254 bytes, one '@' with text on both sides,
 * no spaces or control characters). */
int api_email_valid(const char *s);

/* Borrows a pooled connection; NULL after sending 503. */
PGconn *api_db(api_req_t *r);

/* Sends the error for a failed statement: 409 CONFLICT naming the field for a unique
 * email or username, 503 when PostgreSQL is unreachable, else 500. Logs it. Clears res.
 * Returns the status. */
int api_db_error(api_req_t *r, PGconn *pg, PGresult *res);

/* Runs sql (BEGIN, COMMIT: no parameters, no rows). Returns 0, or the status of the
 * error sent (api_db_error). */
int api_db_command(api_req_t *r, PGconn *pg, const char *sql);

/* Validates and creates a user from body (borrowed): the register/sign-up fields, and
 * `role` when allow_role. Sends the reply (201 user or an error). Returns its status. */
int api_user_create(api_req_t *r, json_t *body, int allow_role);

/* Revokes every live session of user (PostgreSQL, then the Redis markers), with reason.
 * Returns 0 or -1. */
int api_user_revoke_sessions(api_req_t *r, PGconn *pg, const char *user, const char *reason);

/* Makes the gate re-read (tombstone 0) or refuse (tombstone 1) every live API key of
 * user: after a role or status change, or a deletion. Returns 0 or -1. */
int api_keys_forget_user(api_req_t *r, PGconn *pg, const char *user, int tombstone);

/* After a committed role change of an active user: writes each of the user's live keys
 * to the cache with the role PostgreSQL now holds (overwriting, and announced), so that
 * a key read from PostgreSQL before the commit and cached since by another request
 * cannot keep the old role. Returns 0 or -1 (logged). */
int api_keys_recache_user(api_req_t *r, PGconn *pg, const char *user);

#endif
