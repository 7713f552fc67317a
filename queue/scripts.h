/* queue/scripts.h — the Lua scripts (queue/lua/), compiled in, with their SHA1s.
 * Internal to queue/. */
#ifndef Q_SCRIPTS_H
#define Q_SCRIPTS_H

#include <stddef.h>

#include "queue/queue.h"

enum q_script_id {
    QS_ARCHIVED,
    QS_CANCEL,
    QS_ENQUEUE,
    QS_FETCH,
    QS_FINISH,
    QS_HEARTBEAT,
    QS_LEADER,
    QS_PROGRESS,
    QS_PROMOTE,
    QS_RECLAIM,
    QS_RELEASE,
    QS_RETRY,
    QS_SWEEP,
    QS_COUNT
};

/* Source text of a script (static). */
const char *q_script_src(enum q_script_id id);

/* Lowercase hex SHA1 of a script (static, 40 chars). */
const char *q_script_sha(enum q_script_id id);

/* The script whose SHA1 is sha, or -1. */
int q_script_by_sha(const char *sha, size_t len);

/* A new empty argument vector with room for cap entries (it grows). NULL on OOM. */
q_argv_t *q_argv_new(int cap);

/* Appends a copy of len bytes of s. Returns 0 or -1 (the vector is then unusable). */
int q_argv_add(q_argv_t *a, const char *s, size_t len);

/* A new vector "EVALSHA <sha of id> <nkeys>", room for cap entries. NULL on OOM. */
q_argv_t *q_argv_script(enum q_script_id id, int nkeys, int cap);

#endif
