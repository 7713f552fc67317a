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

/* The length of the valid UTF-8 sequence at s (1-4), or 0 when it is not one (a stray
 * continuation byte, a cut sequence, an overlong form, a surrogate, past U+10FFFF). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, min = 0x10000;
    else return 0;
    unsigned cp = c & (0x3f >> (n - 1));
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0; /* also stops at the NUL */
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return n;
}

/* Appends s to buf as the inside of a JSON string; returns the new length. Bytes that are
 * not UTF-8 (a request path, say) become U+FFFD: every line stays valid JSON. */
static size_t json_escape(char *buf, size_t len, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    while (*p && len + 7 < cap) {
        unsigned char c = *p;
        size_t n;
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
        } else if (c < 0x80) {
            buf[len++] = (char)c;
        } else if ((n = utf8_len(p)) == 0) {
            memcpy(buf + len, "\\ufffd", 6);
            len += 6;
        } else if (len + n + 7 < cap) {
            memcpy(buf + len, p, n);
            len += n;
            p += n;
            continue;
        } else {
            break; /* no room for the whole character */
        }
        p++;
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
