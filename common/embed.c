/* common/embed.c — scripts compiled into the binary. */
#include "common/embed.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cm_script_load(const struct cm_embedded *table, const char *name, cm_script_t *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA_DIGEST_LENGTH];

    out->src = NULL;
    for (const struct cm_embedded *e = table; e->name && !out->src; e++)
        if (strcmp(e->name, name) == 0) out->src = e->text;
    if (!out->src) {
        fprintf(stderr, "conveyor: built without the Lua script %s\n", name);
        abort();
    }
    SHA1((const unsigned char *)out->src, strlen(out->src), md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) {
        out->sha[2 * i] = hex[md[i] >> 4];
        out->sha[2 * i + 1] = hex[md[i] & 15];
    }
    out->sha[40] = '\0';
}
