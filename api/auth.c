/* api/auth.c — bearer tokens. */
#include "api/auth.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/util.h"

#define OPERATOR_OWNER "operator"

int api_authenticate(const char *authorization, api_principal_t *out)
{
    const char *tok;

    memset(out, 0, sizeof(*out));
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return API_AUTH_EMISSING;
    for (tok = authorization + 7; *tok == ' '; tok++) {}
    if (!*tok || strchr(tok, ' ')) return API_AUTH_EMISSING;
    if (!cm_cfg.operator_token || !*cm_cfg.operator_token ||
        !cm_secure_equal(tok, cm_cfg.operator_token))
        return API_AUTH_EINVALID;
    snprintf(out->owner, sizeof(out->owner), "%s", OPERATOR_OWNER);
    out->role = API_ROLE_ADMIN;
    return 0;
}
