/* common/embed.h — text files compiled into the binary (Lua scripts, SQL migrations). */
#ifndef CM_EMBED_H
#define CM_EMBED_H

struct cm_embedded {
    const char *name; /* file name without its extension */
    const char *text;
};

/* A Lua script of an embedded table, with the SHA1 Redis knows it by. */
typedef struct cm_script {
    const char *src;
    char sha[41]; /* lowercase hex */
} cm_script_t;

/* Fills out from the entry called name of table (ended by {NULL, NULL}). A name the build
 * did not embed is a build error: it is reported and the process aborts, at start-up. */
void cm_script_load(const struct cm_embedded *table, const char *name, cm_script_t *out);

#endif
