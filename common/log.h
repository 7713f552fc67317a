/* common/log.h — one JSON object per line on stderr.
 *
 * Every line has ts, level, proc, pid and msg; job lines add job_id, request lines
 * request_id. The macros test the level before evaluating their arguments. */
#ifndef CM_LOG_H
#define CM_LOG_H

enum { CM_LOG_ERR = 0, CM_LOG_WARN = 1, CM_LOG_INFO = 2, CM_LOG_DEBUG = 3 };

extern int cm_log_level;

/* Sets the process name written in every line ("api", "worker", ...) and the level
 * from a name ("error", "warn", "info", "debug"); unknown names keep "info". */
void cm_log_init(const char *proc, const char *level_name);

/* Writes one line. idkey/idval name the object the line concerns (may be NULL). */
void cm_log_write(int level, const char *idkey, const char *idval, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define CM_LOG_(lvl, k, v, ...)                                                         \
    do {                                                                                \
        if (cm_log_level >= (lvl)) cm_log_write((lvl), (k), (v), __VA_ARGS__);          \
    } while (0)

#define LOG_ERR(...) CM_LOG_(CM_LOG_ERR, NULL, NULL, __VA_ARGS__)
#define LOG_WARN(...) CM_LOG_(CM_LOG_WARN, NULL, NULL, __VA_ARGS__)
#define LOG_INFO(...) CM_LOG_(CM_LOG_INFO, NULL, NULL, __VA_ARGS__)
#define LOG_DEBUG(...) CM_LOG_(CM_LOG_DEBUG, NULL, NULL, __VA_ARGS__)

#define LOG_JOB_ERR(id, ...) CM_LOG_(CM_LOG_ERR, "job_id", (id), __VA_ARGS__)
#define LOG_JOB_WARN(id, ...) CM_LOG_(CM_LOG_WARN, "job_id", (id), __VA_ARGS__)
#define LOG_JOB_INFO(id, ...) CM_LOG_(CM_LOG_INFO, "job_id", (id), __VA_ARGS__)
#define LOG_JOB_DEBUG(id, ...) CM_LOG_(CM_LOG_DEBUG, "job_id", (id), __VA_ARGS__)

#define LOG_REQ_ERR(id, ...) CM_LOG_(CM_LOG_ERR, "request_id", (id), __VA_ARGS__)
#define LOG_REQ_WARN(id, ...) CM_LOG_(CM_LOG_WARN, "request_id", (id), __VA_ARGS__)
#define LOG_REQ_INFO(id, ...) CM_LOG_(CM_LOG_INFO, "request_id", (id), __VA_ARGS__)
#define LOG_REQ_DEBUG(id, ...) CM_LOG_(CM_LOG_DEBUG, "request_id", (id), __VA_ARGS__)

#endif
