/* api/auth.h — who is calling: the Authorization header resolved to a principal.
 *
 * Until user accounts exist, the only credential is the operator token
 * (CONVEYOR_OPERATOR_TOKEN): its bearer is owner "operator" with the admin role. JWT
 * access tokens and API keys plug in behind api_authenticate without changing callers. */
#ifndef API_AUTH_H
#define API_AUTH_H

#define API_OWNER_MAX 64 /* owner ids, NUL included */

typedef enum { API_ROLE_USER = 0, API_ROLE_ADMIN = 1 } api_role_t;

/* The caller of one request: the owner id its jobs carry and its role. */
typedef struct api_principal {
    char owner[API_OWNER_MAX];
    api_role_t role;
} api_principal_t;

enum {
    API_AUTH_EMISSING = -1, /* no Authorization header, or not "Bearer <token>" */
    API_AUTH_EINVALID = -2, /* a bearer token that is not valid */
};

/* Resolves an Authorization header value (borrowed; NULL when absent) into *out.
 * Returns 0, API_AUTH_EMISSING or API_AUTH_EINVALID. Never logs the token. */
int api_authenticate(const char *authorization, api_principal_t *out);

#endif
