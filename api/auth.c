/* api/auth.c — bearer tokens. */
#include "api/auth.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/util.h"

#define OPERATOR_OWNER "operator"

static unsigned char operator_digest[32];
static pthread_once_t operator_once = PTHREAD_ONCE_INIT;

static void digest_operator_token(void)
{
    cm_sha256(cm_cfg.operator_token, strlen(cm_cfg.operator_token), operator_digest);
}

int api_authenticate(const char *authorization, api_principal_t *out)
{
    const char *tok;

    memset(out, 0, sizeof(*out));
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return API_AUTH_EMISSING;
    for (tok = authorization + 7; *tok == ' '; tok++) {}
    if (!*tok || strchr(tok, ' ')) return API_AUTH_EMISSING;
    if (!cm_cfg.operator_token || !*cm_cfg.operator_token) return API_AUTH_EINVALID;
    pthread_once(&operator_once, digest_operator_token);
    if (!cm_secure_equal_digest(tok, operator_digest)) return API_AUTH_EINVALID;
    snprintf(out->owner, sizeof(out->owner), "%s", OPERATOR_OWNER);
    out->role = API_ROLE_ADMIN;
    return 0;
}
