/* common/embed.h — text files compiled into the binary (Lua scripts, SQL migrations). */
#ifndef CM_EMBED_H
#define CM_EMBED_H

struct cm_embedded {
    const char *name; /* file name without its extension */
    const char *text;
};

#endif
