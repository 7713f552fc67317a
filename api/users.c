/* api/users.c — user accounts: sign-up, profile reads and updates, deletion. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/accounts.h"
#include "api/gate.h"
#include "common/config.h"
#include "common/log.h"
#include "common/password.h"
#include "common/util.h"

#define ACQUIRE_MS 2000
#define TEXT_MAX 100     /* characters of a name */
#define EMAIL_MAX 254
#define USERNAME_MAX 64
#define PASSWORD_MAX 1024 /* bytes */
#define UPDATE_MAX 10     /* columns one PUT may set */

/* ---- shared ---------------------------------------------------------------------- */

PGconn *api_db(api_req_t *r)
{
    PGconn *pg = cm_pg_acquire(r->pg, ACQUIRE_MS);
    if (!pg)
        api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                  "the database is unavailable; try again shortly");
    return pg;
}

int api_db_error(api_req_t *r, PGconn *pg, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *cons = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    int st;

    if (state && strcmp(state, "23505") == 0 && cons) { /* unique_violation */
        const char *field = strstr(cons, "username") ? "username" : "email";
        st = api_error(r, 409, "CONFLICT", json_pack("{s:s}", "field", field), NULL,
                       "a user with this %s already exists", field);
    } else if (PQstatus(pg) != CONNECTION_OK) {
        LOG_REQ_ERR(r->request_id, "postgresql: %s", PQerrorMessage(pg));
        st = api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                       "the database is unavailable; try again shortly");
    } else {
        LOG_REQ_ERR(r->request_id, "postgresql: %s", PQerrorMessage(pg));
        st = api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
    }
    PQclear(res);
    return st;
}

int api_db_command(api_req_t *r, PGconn *pg, const char *sql)
{
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) return api_db_error(r, pg, res);
    PQclear(res);
    return 0;
}

/* Column col of row as a JSON string, or null. */
static json_t *col_text(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

static json_t *col_time(const PGresult *res, int row, int col)
{
    char t[40];
    if (PQgetisnull(res, row, col)) return json_null();
    cm_format_time(strtoll(PQgetvalue(res, row, col), NULL, 10), t, sizeof(t));
    return json_string(t);
}

json_t *api_user_json(const PGresult *res, int row, int c)
{
    json_t *prefs = json_loads(PQgetvalue(res, row, c + 8), 0, NULL), *name;

    if (!PQgetisnull(res, row, c + 5)) {
        name = col_text(res, row, c + 5);
    } else if (!PQgetisnull(res, row, c + 3) || !PQgetisnull(res, row, c + 4)) {
        char full[2 * 4 * TEXT_MAX + 2];
        snprintf(full, sizeof(full), "%s%s%s", PQgetvalue(res, row, c + 3),
                 !PQgetisnull(res, row, c + 3) && !PQgetisnull(res, row, c + 4) ? " " : "",
                 PQgetvalue(res, row, c + 4));
        name = json_string(full);
    } else {
        name = json_null();
    }
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b,s:o,s:o,s:o}", "id", col_text(res, row, c),
                     "email", col_text(res, row, c + 1), "username", col_text(res, row, c + 2),
                     "firstName", col_text(res, row, c + 3), "lastName",
                     col_text(res, row, c + 4), "name", name, "role", col_text(res, row, c + 6),
                     "isActive", PQgetvalue(res, row, c + 7)[0] == 't', "preferences",
                     prefs ? prefs : json_object(), "createdAt", col_time(res, row, c + 9),
                     "updatedAt", col_time(res, row, c + 10));
}

int api_user_revoke_sessions(api_req_t *r, PGconn *pg, const char *user, const char *reason)
{
    const char *params[] = {user, reason};
    PGresult *res = PQexecParams(
        pg,
        "UPDATE sessions SET revoked_at = now(), revoke_reason = $2 "
        "WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
        2, NULL, params, NULL, NULL, 0);
    int rc = -1, n;
    char **sids = NULL;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        LOG_REQ_ERR(r->request_id, "revoking sessions: %s", PQerrorMessage(pg));
        goto out;
    }
    n = PQntuples(res);
    if (!(sids = calloc((size_t)n + 1, sizeof(*sids)))) goto out;
    for (int i = 0; i < n; i++) sids[i] = PQgetvalue(res, i, 0);
    rc = api_revoke_sessions(r, sids, n);
out:
    free(sids);
    PQclear(res);
    return rc;
}

/* ---- validation ------------------------------------------------------------------ */

int api_email_valid(const char *s)
{
    const char *at = strchr(s, '@');
    size_t n = strlen(s);
    if (n < 3 || n > EMAIL_MAX || !at || at == s || !at[1] || strchr(at + 1, '@')) return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f) return 0;
    return 1;
}

static int valid_username(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > USERNAME_MAX) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* Reads optional text field f of body into *out (NULL: absent or null; *set says whether
 * it was given). Returns 0, or -1 after sending 422. */
static int opt_text(api_req_t *r, json_t *body, const char *f, const char **out, int *set)
{
    json_t *v = json_object_get(body, f);
    *out = NULL;
    if (set) *set = v != NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return api_field_error(r, f, "%s must be a string or null", f), -1;
    *out = json_string_value(v);
    if (strcmp(f, "username") == 0) {
        if (!valid_username(*out))
            return api_field_error(r, f, "username must be 1-%d of A-Z a-z 0-9 . _ -",
                                   USERNAME_MAX), -1;
    } else if (api_utf8_chars(*out) > TEXT_MAX || memchr(*out, '\0', json_string_length(v))) {
        return api_field_error(r, f, "%s must be at most %d characters", f, TEXT_MAX), -1;
    }
    return 0;
}

/* Reads required email field f into *out (trimmed copy in buf). Returns 0 or -1 (sent). */
static int get_email(api_req_t *r, json_t *body, char buf[EMAIL_MAX + 1], const char **out)
{
    json_t *v = json_object_get(body, "email");
    const char *s;
    size_t n;
    if (!v) return api_field_error(r, "email", "email is required"), -1;
    if (!json_is_string(v)) return api_field_error(r, "email", "email must be a string"), -1;
    s = json_string_value(v);
    n = json_string_length(v);
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (n > EMAIL_MAX || memchr(s, '\0', n))
        return api_field_error(r, "email", "email must be an address of at most %d characters",
                               EMAIL_MAX), -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (!api_email_valid(buf))
        return api_field_error(r, "email", "email must be an address like name@example.com"), -1;
    *out = buf;
    return 0;
}

/* Checks password field f (required) against the policy. Returns 0 or -1 (sent). */
static int get_password(api_req_t *r, json_t *body, const char *f, const char **out,
                        size_t *len)
{
    json_t *v = json_object_get(body, f);
    if (!v) return api_field_error(r, f, "%s is required", f), -1;
    if (!json_is_string(v)) return api_field_error(r, f, "%s must be a string", f), -1;
    *out = json_string_value(v);
    *len = json_string_length(v);
    if (api_utf8_chars(*out) < (size_t)cm_cfg.password_min_length || *len > PASSWORD_MAX)
        return api_field_error(r, f, "%s must be %d to %d characters long", f,
                               cm_cfg.password_min_length, PASSWORD_MAX), -1;
    return 0;
}

static int hash_password(const char *pw, size_t len, char out[CM_PASSWORD_HASH_MAX])
{
    return cm_password_hash(pw, len, (uint32_t)cm_cfg.argon2_iterations,
                            (uint32_t)cm_cfg.argon2_memory_kib, out, CM_PASSWORD_HASH_MAX);
}

/* ---- create ---------------------------------------------------------------------- */

int api_user_create(api_req_t *r, json_t *body, int allow_role)
{
    static const char *const fields[] = {"email",    "password", "firstName", "lastName",
                                         "username", "name",     "role",      NULL};
    const char *unknown, *email, *pw, *first, *last, *username, *name, *role = "user";
    char ebuf[EMAIL_MAX + 1], hash[CM_PASSWORD_HASH_MAX], id[40];
    size_t pwlen;
    api_role_t rl;
    json_t *rv;

    if ((unknown = api_json_unknown_key(body, fields)))
        return api_field_error(r, unknown, "unknown field '%s'", unknown);
    if ((rv = json_object_get(body, "role"))) {
        if (!allow_role)
            return api_error(r, 403, "FORBIDDEN", json_pack("{s:s}", "field", "role"), NULL,
                             "only an admin sets a user's role");
        if (!json_is_string(rv) || !api_role_parse(json_string_value(rv), &rl))
            return api_field_error(r, "role", "role must be \"user\" or \"admin\"");
        role = api_role_name(rl);
    }
    if (get_email(r, body, ebuf, &email) || get_password(r, body, "password", &pw, &pwlen) ||
        opt_text(r, body, "firstName", &first, NULL) ||
        opt_text(r, body, "lastName", &last, NULL) ||
        opt_text(r, body, "username", &username, NULL) || opt_text(r, body, "name", &name, NULL))
        return r->status;
    if (hash_password(pw, pwlen, hash) != 0 || cm_random_id(id, sizeof(id), "usr_", CM_ID_RAND_LEN)) {
        LOG_REQ_ERR(r->request_id, "cannot hash a password");
        return api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
    }
    const char *params[] = {id, email, username, first, last, name, role, hash};
    PGconn *pg = api_db(r);
    if (!pg) return r->status;
    PGresult *res = PQexecParams(
        pg,
        "INSERT INTO users AS u (id, email, username, first_name, last_name, name, role, "
        "password_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING " API_USER_COLS,
        8, NULL, params, NULL, NULL, 0);
    int st;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = api_db_error(r, pg, res);
    } else {
        char loc[96];
        snprintf(loc, sizeof(loc), "Location: /v1/users/%s\r\n", id);
        LOG_REQ_INFO(r->request_id, "user %s created (%s)", id, role);
        st = api_reply(r, 201, api_user_json(res, 0, 0), loc);
        PQclear(res);
    }
    cm_pg_release(r->pg, pg);
    return st;
}

int api_users_create(api_req_t *r)
{
    json_t *body;
    int st;
    if (api_read_json(r, 1, &body) != 0) return r->status;
    st = api_user_create(r, body, r->who.role == API_ROLE_ADMIN && r->who.cred != API_CRED_NONE);
    json_decref(body);
    return st;
}

/* ---- read, update, delete -------------------------------------------------------- */

/* The user id {id} names for the caller ("me"/"profile": the caller), or NULL after
 * sending 403 (the operator is not a user) or 404 (another user, for a non-admin). */
static const char *target(api_req_t *r)
{
    if (strcmp(r->param, "me") == 0 || strcmp(r->param, "profile") == 0) {
        if (r->who.cred == API_CRED_OPERATOR) {
            api_error(r, 403, "FORBIDDEN", NULL, NULL,
                      "the operator token is not a user; use /v1/users/{id}");
            return NULL;
        }
        return r->who.owner;
    }
    if (!*r->param || (r->who.role != API_ROLE_ADMIN && strcmp(r->param, r->who.owner) != 0)) {
        api_error(r, 404, "NOT_FOUND", NULL, NULL, "user not found");
        return NULL;
    }
    return r->param;
}

int api_users_get(api_req_t *r)
{
    const char *id = target(r);
    PGconn *pg;
    PGresult *res;
    int st;

    if (!id || !(pg = api_db(r))) return r->status;
    res = PQexecParams(pg, "SELECT " API_USER_COLS " FROM users u WHERE u.id = $1", 1, NULL,
                       &id, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = api_db_error(r, pg, res);
    } else {
        st = PQntuples(res) == 1 ? api_reply(r, 200, api_user_json(res, 0, 0), NULL)
                                 : api_error(r, 404, "NOT_FOUND", NULL, NULL, "user not found");
        PQclear(res);
    }
    cm_pg_release(r->pg, pg);
    return st;
}

/* Checks currentPassword of body against user id's hash. Returns 0 or -1 (sent). */
static int check_current_password(api_req_t *r, PGconn *pg, const char *id, json_t *body)
{
    json_t *v = json_object_get(body, "currentPassword");
    const char *params[] = {id};
    PGresult *res;
    int ok;

    if (!json_is_string(v))
        return api_field_error(r, "currentPassword",
                               "currentPassword is required to change the password"), -1;
    res = PQexecParams(pg, "SELECT password_hash FROM users WHERE id = $1", 1, NULL, params,
                       NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) return api_db_error(r, pg, res), -1;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return api_error(r, 404, "NOT_FOUND", NULL, NULL, "user not found"), -1;
    }
    ok = cm_password_verify(PQgetvalue(res, 0, 0), json_string_value(v), json_string_length(v));
    PQclear(res);
    if (ok != 1) return api_field_error(r, "currentPassword", "currentPassword is wrong"), -1;
    return 0;
}

int api_users_update(api_req_t *r)
{
    static const char *const fields[] = {"email",     "username",    "firstName", "lastName",
                                         "name",      "preferences", "password",  "currentPassword",
                                         "role",      "isActive",    NULL};
    static const char *const text_cols[][2] = {{"username", "username"},
                                               {"firstName", "first_name"},
                                               {"lastName", "last_name"},
                                               {"name", "name"}};
    const char *id = target(r), *unknown, *params[UPDATE_MAX + 1], *email;
    char sql[1024], ebuf[EMAIL_MAX + 1], hash[CM_PASSWORD_HASH_MAX], *prefs = NULL;
    int n = 1, used = 0, st, admin = r->who.role == API_ROLE_ADMIN, revoke = 0, began = 0;
    json_t *body = NULL, *v;
    PGconn *pg = NULL;
    PGresult *res;

    if (!id || api_read_json(r, 1, &body) != 0) return r->status;
    params[0] = id;
    used = snprintf(sql, sizeof(sql), "UPDATE users AS u SET updated_at = now()");
#define SET(col, val)                                                                    \
    do {                                                                                 \
        params[n++] = (val);                                                             \
        used += snprintf(sql + used, sizeof(sql) - (size_t)used, ", %s = $%d", col, n);  \
    } while (0)
    if ((unknown = api_json_unknown_key(body, fields))) {
        st = api_field_error(r, unknown, "unknown field '%s'", unknown);
        goto out;
    }
    if ((json_object_get(body, "role") || json_object_get(body, "isActive")) && !admin) {
        st = api_error(r, 403, "FORBIDDEN", NULL, NULL,
                       "only an admin changes a user's role or isActive");
        goto out;
    }
    if (json_object_get(body, "email")) {
        if (get_email(r, body, ebuf, &email)) goto sent;
        SET("email", email);
    }
    for (size_t i = 0; i < sizeof(text_cols) / sizeof(text_cols[0]); i++) {
        const char *val;
        int set;
        if (opt_text(r, body, text_cols[i][0], &val, &set)) goto sent;
        if (set) SET(text_cols[i][1], val);
    }
    if ((v = json_object_get(body, "preferences"))) {
        if (!json_is_object(v)) {
            st = api_field_error(r, "preferences", "preferences must be an object");
            goto out;
        }
        if (!(prefs = json_dumps(v, JSON_COMPACT))) goto oom;
        SET("preferences", prefs);
    }
    if ((v = json_object_get(body, "role"))) {
        api_role_t role;
        if (!json_is_string(v) || !api_role_parse(json_string_value(v), &role)) {
            st = api_field_error(r, "role", "role must be \"user\" or \"admin\"");
            goto out;
        }
        SET("role", api_role_name(role));
    }
    if ((v = json_object_get(body, "isActive"))) {
        if (!json_is_boolean(v)) {
            st = api_field_error(r, "isActive", "isActive must be true or false");
            goto out;
        }
        SET("is_active", json_is_true(v) ? "true" : "false");
    }
    if (!(pg = api_db(r))) goto sent;
    if ((v = json_object_get(body, "password"))) {
        const char *pw;
        size_t len;
        if (get_password(r, body, "password", &pw, &len)) goto sent;
        if (!admin && check_current_password(r, pg, id, body)) goto sent;
        if (hash_password(pw, len, hash) != 0) goto oom;
        SET("password_hash", hash);
    } else if (json_object_get(body, "currentPassword")) {
        st = api_field_error(r, "currentPassword", "currentPassword goes with password");
        goto out;
    }
    if (n == 1) {
        st = api_error(r, 422, "VALIDATION_ERROR", json_pack("{s:s}", "field", "body"), NULL,
                       "nothing to update: give at least one field");
        goto out;
    }
#undef SET
    /* o: the row before the update, to see whether the role or isActive changed */
    used += snprintf(sql + used, sizeof(sql) - (size_t)used,
                     " FROM (SELECT role, is_active FROM users WHERE id = $1 FOR UPDATE) o "
                     "WHERE u.id = $1 RETURNING " API_USER_COLS
                     ", u.role <> o.role OR u.is_active <> o.is_active");
    if ((size_t)used >= sizeof(sql)) goto oom;
    if ((st = api_db_command(r, pg, "BEGIN")) != 0) goto out;
    began = 1;
    res = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        st = api_db_error(r, pg, res);
        goto out;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        st = api_error(r, 404, "NOT_FOUND", NULL, NULL, "user not found");
        goto out;
    }
    revoke = PQgetvalue(res, 0, API_USER_NCOLS)[0] == 't';
    /* A demoted or deactivated user's tokens and cached keys must not outlive it. */
    if (revoke && (api_user_revoke_sessions(r, pg, id, "role or status changed") != 0 ||
                   api_keys_forget_user(r, pg, id, PQgetvalue(res, 0, 7)[0] != 't') != 0)) {
        PQclear(res);
        st = api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                       "cannot revoke the user's sessions now; nothing changed");
        goto out;
    }
    began = 0;
    if ((st = api_db_command(r, pg, "COMMIT")) != 0) {
        PQclear(res);
        goto out;
    }
    /* The keys were dropped from the cache before the commit (so that a failure changed
     * nothing); a request may have cached one again from the row as it was. */
    if (revoke && PQgetvalue(res, 0, 7)[0] == 't') (void)api_keys_recache_user(r, pg, id);
    st = api_reply(r, 200, api_user_json(res, 0, 0), NULL);
    PQclear(res);
out:
    if (began) PQclear(PQexec(pg, "ROLLBACK"));
    if (pg) cm_pg_release(r->pg, pg);
    free(prefs);
    json_decref(body);
    return st;
sent:
    st = r->status;
    goto out;
oom:
    LOG_REQ_ERR(r->request_id, "out of memory updating a user");
    st = api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
    goto out;
}

int api_users_delete(api_req_t *r)
{
    const char *id = target(r);
    PGconn *pg;
    PGresult *res;
    int st, began = 0;

    if (!id || !(pg = api_db(r))) return r->status;
    if ((st = api_db_command(r, pg, "BEGIN")) != 0) goto out;
    began = 1;
    /* Inside the transaction, before the cascade: a failure here leaves the user whole
     * (and the deletion can be retried). */
    if (api_user_revoke_sessions(r, pg, id, "user deleted") != 0 ||
        api_keys_forget_user(r, pg, id, 1) != 0) {
        st = api_error(r, 503, "SERVICE_UNAVAILABLE", NULL, "Retry-After: 1\r\n",
                       "cannot revoke the user's sessions now; nothing changed");
        goto out;
    }
    res = PQexecParams(pg, "DELETE FROM users WHERE id = $1", 1, NULL, &id, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        st = api_db_error(r, pg, res);
        goto out;
    }
    if (strcmp(PQcmdTuples(res), "1") != 0) {
        PQclear(res);
        st = api_error(r, 404, "NOT_FOUND", NULL, NULL, "user not found");
        goto out;
    }
    PQclear(res);
    began = 0;
    if ((st = api_db_command(r, pg, "COMMIT")) != 0) goto out;
    LOG_REQ_INFO(r->request_id, "user %s deleted", id);
    st = api_reply(r, 204, NULL, NULL);
out:
    if (began) PQclear(PQexec(pg, "ROLLBACK"));
    cm_pg_release(r->pg, pg);
    return st;
}
