/* common/log.c — JSON-lines logger. */
#define _POSIX_C_SOURCE 200809L
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int cm_log_level = CM_LOG_INFO;
static char proc_name[32] = "conveyor";
static const char *level_names[] = {"error", "warn", "info", "debug"};

void cm_log_init(const char *proc, const char *level_name)
{
    if (proc) snprintf(proc_name, sizeof(proc_name), "%s", proc);
    cm_log_level = CM_LOG_INFO;
    if (!level_name) return;
    for (int i = 0; i < 4; i++)
        if (strcmp(level_name, level_names[i]) == 0) cm_log_level = i;
    if (strcmp(level_name, "err") == 0) cm_log_level = CM_LOG_ERR;
}

/* Appends s to buf as the inside of a JSON string; returns the new length. */
static size_t json_escape(char *buf, size_t len, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s && len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)c;
        } else if (c == '\n') {
            buf[len++] = '\\';
            buf[len++] = 'n';
        } else if (c < 0x20) {
            buf[len++] = '\\';
            buf[len++] = 'u';
            buf[len++] = '0';
            buf[len++] = '0';
            buf[len++] = hex[c >> 4];
            buf[len++] = hex[c & 15];
        } else {
            buf[len++] = (char)c;
        }
    }
    return len;
}

void cm_log_write(int level, const char *idkey, const char *idval, const char *fmt, ...)
{
    char msg[2048], line[4608];
    struct timespec ts;
    struct tm tm;
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    if (level < 0) level = 0;
    if (level > 3) level = 3;
    n = (size_t)snprintf(line, sizeof(line),
                         "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
                         "\"proc\":\"%s\",\"pid\":%d,",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                         tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], proc_name,
                         (int)getpid());
    if (idkey && idval) {
        n += (size_t)snprintf(line + n, sizeof(line) - n, "\"%s\":\"", idkey);
        n = json_escape(line, n, sizeof(line) - 64, idval);
        n += (size_t)snprintf(line + n, sizeof(line) - n, "\",");
    }
    n += (size_t)snprintf(line + n, sizeof(line) - n, "\"msg\":\"");
    n = json_escape(line, n, sizeof(line) - 8, msg);
    memcpy(line + n, "\"}\n", 4);
    n += 3;
    fwrite(line, 1, n, stderr);
}
