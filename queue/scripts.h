/* queue/scripts.h — the Lua scripts (queue/lua/), compiled in, with their SHA1s.
 * Internal to queue/. */
#ifndef Q_SCRIPTS_H
#define Q_SCRIPTS_H

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

#endif
