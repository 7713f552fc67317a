/* api/http.c — replies, errors, body and query parsing. */
#include "api/http.h"

#include <errno.h>
#include <stdarg.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/conn.h"
#include "common/config.h"
#include "common/log.h"
#include "common/util.h"

#define HEAD_ROOM 1024   /* status line and headers, written just before the body */
#define STACK_BODY 16384 /* bodies up to this size need no allocation */
#define READ_CHUNK 16384

/* ---- replies -------------------------------------------------------------------- */

/* The reason phrase of status (civetweb's list misspells some). */
static const char *reason(int status)
{
    switch (status) {
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    default: return mg_get_response_code_text(NULL, status);
    }
}

/* 1 if the connection stays open after this request (civetweb's keep-alive decision).
 * The Connection header it implies (HTTP/1.0 clients must
 * be told); a kept connection also says how long it may idle (civetweb closes it after
 * KEEP_ALIVE_TIMEOUT_MS = 2 s: clients told 1 s do not reuse it as it closes). */
static int keep_alive(const api_req_t *r)
{
    const char *h = mg_get_header(r->conn, "Connection");
    return !r->close && (h ? strcasestr(h, "keep-alive") != NULL
                           : r->ri->http_version && strcmp(r->ri->http_version, "1.1") == 0);
}

static const char *connection_header(const api_req_t *r)
{
    const char *h = mg_get_header(r->conn, "Connection");
    if (!keep_alive(r)) return "Connection: close\r\n";
    return h ? "Connection: keep-alive\r\nKeep-Alive: timeout=1\r\n" : "Keep-Alive: timeout=1\r\n";
}

size_t api_render(const json_t *body, char *buf, size_t cap)
{
    /* 12 digits: prices such as 0.00003 print as 3e-05, not 3.0000000000000001e-05 */
    return json_dumpb(body, buf, cap, API_RENDER_FLAGS);
}

/* What the head of a reply says besides its status, body and extra header lines. */
typedef struct head_info {
    const char *request_id, *connection, *limit_headers;
} head_info_t;

/* Writes the status line and headers into the HEAD_ROOM bytes before the body (n bytes
 * at buf + HEAD_ROOM). Returns where the reply starts; *total is its length. */
static char *put_head(const head_info_t *h, int status, char *buf, size_t n,
                      const char *headers, size_t *total)
{
    char head[HEAD_ROOM], length[80] = "";
    int hl;

    if (status == 204) /* no body, and then no Content-Length either (RFC 9110 8.6) */
        n = 0;
    else
        snprintf(length, sizeof(length),
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n", n);
    hl = snprintf(head, sizeof(head),
                  "HTTP/1.1 %d %s\r\n%sX-Request-Id: %s\r\nCache-Control: no-store\r\n%s%s%s\r\n",
                  status, reason(status), length, h->request_id, h->connection,
                  h->limit_headers, headers ? headers : "");
    if (hl < 0 || hl >= HEAD_ROOM) { /* our own headers: cannot happen */
        LOG_REQ_ERR(h->request_id, "reply headers too long");
        hl = 0;
    }
    memcpy(buf + HEAD_ROOM - hl, head, (size_t)hl);
    *total = (size_t)hl + n;
    return buf + HEAD_ROOM - hl;
}

/* Writes the reply (head and body; n bytes at buf + HEAD_ROOM, left out for HEAD) in
 * one write. */
static int send_reply(api_req_t *r, int status, char *buf, size_t n, const char *headers)
{
    head_info_t h = {r->request_id, connection_header(r), r->limit_headers};
    size_t total;
    char *start = put_head(&h, status, buf, n, headers, &total);

    if (strcmp(r->ri->request_method, "HEAD") == 0) total -= status == 204 ? 0 : n;
    mg_write(r->conn, start, total);
    r->status = status;
    return status;
}

static int out_of_memory(api_req_t *r, size_t need)
{
    char buf[HEAD_ROOM];
    LOG_REQ_ERR(r->request_id, "out of memory for a %zu-byte reply", need);
    return send_reply(r, 500, buf, 0, NULL);
}

int api_reply(api_req_t *r, int status, json_t *body, const char *headers)
{
    char stackbuf[HEAD_ROOM + STACK_BODY];
    char *heap = NULL;
    size_t n;

    if (!body) body = json_object();
    n = api_render(body, stackbuf + HEAD_ROOM, STACK_BODY);
    if (n > STACK_BODY) {
        size_t need = n;
        if (!(heap = malloc(HEAD_ROOM + need))) {
            json_decref(body);
            return out_of_memory(r, need);
        }
        n = api_render(body, heap + HEAD_ROOM, need);
    }
    json_decref(body);
    status = send_reply(r, status, heap ? heap : stackbuf, n, headers);
    free(heap);
    return status;
}

/* body (len bytes) after HEAD_ROOM bytes for the head: in stackbuf (HEAD_ROOM +
 * STACK_BODY) or a new buffer. NULL when out of memory. */
static char *with_head_room(char *stackbuf, const char *body, size_t len)
{
    char *buf = len <= STACK_BODY ? stackbuf : malloc(HEAD_ROOM + len);
    if (buf && len) memcpy(buf + HEAD_ROOM, body, len);
    return buf;
}

int api_reply_text(api_req_t *r, int status, const char *body, size_t len,
                   const char *headers)
{
    char stackbuf[HEAD_ROOM + STACK_BODY];
    char *buf = with_head_room(stackbuf, body, len);

    if (!buf) return out_of_memory(r, len);
    status = send_reply(r, status, buf, len, headers);
    if (buf != stackbuf) free(buf);
    return status;
}

/* The error envelope (details taken; NULL: null). */
static json_t *error_body(const char *code, json_t *details, const char *request_id,
                          const char *msg)
{
    json_t *err = json_object(), *m;
    if (!(m = json_string(msg))) m = json_string("invalid request"); /* not UTF-8 */
    json_object_set_new(err, "code", json_string(code));
    json_object_set_new(err, "message", m);
    json_object_set_new(err, "details", details ? details : json_null());
    json_object_set_new(err, "requestId", json_string(request_id));
    return json_pack("{s:o}", "error", err);
}

int api_error(api_req_t *r, int status, const char *code, json_t *details,
              const char *headers, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return api_reply(r, status, error_body(code, details, r->request_id, msg), headers);
}

int api_field_error(api_req_t *r, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return api_error(r, 422, "VALIDATION_ERROR", json_pack("{s:s}", "field", field), NULL,
                     "%s", msg);
}

/* The error for a failed queue call (logged when it is ours): returns the status with
 * its code, message and extra header lines. */
static int queue_error(const char *request_id, int qerr, const char **code, const char **msg,
                       const char **headers)
{
    if (qerr == Q_EREDIS) {
        *code = "SERVICE_UNAVAILABLE";
        *msg = "the queue is unavailable; try again shortly";
        *headers = "Retry-After: 1\r\n";
        return 503;
    }
    LOG_REQ_ERR(request_id, "queue call failed: %s", q_strerror(qerr));
    *code = "INTERNAL_ERROR";
    *msg = "internal error";
    *headers = NULL;
    return 500;
}

int api_queue_error(api_req_t *r, int qerr)
{
    const char *code, *msg, *headers;
    int status = queue_error(r->request_id, qerr, &code, &msg, &headers);
    return api_error(r, status, code, NULL, headers, "%s", msg);
}

/* ---- deferred replies ----------------------------------------------------------- */

int api_later_begin(api_req_t *r, api_later_t *l, int status)
{
    /* a connection about to close has no next request to read meanwhile, and finding
     * its socket would cost more than the wait it saves */
    if (!r->slot || strcmp(r->ri->request_method, "HEAD") == 0 || !keep_alive(r) ||
        api_conn_hold(r->slot, r->ri) != 0)
        return -1;
    l->conn = r->slot;
    memcpy(l->request_id, r->request_id, sizeof(l->request_id));
    memcpy(l->limit_headers, r->limit_headers, sizeof(l->limit_headers));
    l->connection = connection_header(r);
    r->status = status;
    return 0;
}

void api_later_text(api_later_t *l, int status, const char *body, size_t len,
                    const char *headers)
{
    char stackbuf[HEAD_ROOM + STACK_BODY];
    char *buf = with_head_room(stackbuf, body, len);
    head_info_t h = {l->request_id, l->connection, l->limit_headers};
    size_t total;
    char *start;

    if (!buf) { /* the head alone, as out_of_memory sends it */
        LOG_REQ_ERR(l->request_id, "out of memory for a %zu-byte reply", len);
        buf = stackbuf;
        status = 500;
        len = 0;
        headers = NULL;
    }
    start = put_head(&h, status, buf, len, headers, &total);
    if (api_conn_write(l->conn, start, total) != 0)
        LOG_REQ_WARN(l->request_id, "reply %d not written: the client is gone or not reading",
                     status);
    if (buf != stackbuf) free(buf);
}

void api_later_queue_error(api_later_t *l, int qerr)
{
    const char *code, *msg, *headers;
    int status = queue_error(l->request_id, qerr, &code, &msg, &headers);
    char buf[1024];
    /* the request's log line said 202, written when the request thread let it go */
    LOG_REQ_WARN(l->request_id, "deferred reply: %d %s", status, code);
    json_t *body = error_body(code, NULL, l->request_id, msg);
    size_t n = body ? api_render(body, buf, sizeof(buf)) : 0;
    json_decref(body);
    if (n == 0 || n > sizeof(buf)) { /* cannot happen: our own short message */
        n = 0;
        status = 500;
    }
    api_later_text(l, status, buf, n, headers);
}

/* ---- body ----------------------------------------------------------------------- */

/* 1 if a Content-Type value names JSON: application/json, parameters allowed. */
static int is_json_type(const char *ct)
{
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    while (*ct == ' ' || *ct == '\t') ct++, n--;
    return n == 16 && strncasecmp(ct, "application/json", 16) == 0;
}

static int too_large(api_req_t *r)
{
    r->close = 1; /* the rest of the body is not worth reading */
    return api_error(r, 413, "PAYLOAD_TOO_LARGE",
                     json_pack("{s:i}", "maxBytes", cm_cfg.max_body_bytes), NULL,
                     "the request body is larger than %d bytes", cm_cfg.max_body_bytes);
}

/* Reads the whole body, at most max + 1 bytes. Returns 0 with *out (malloc'd, NUL
 * added) and *len, or -1 after sending the error. */
static int read_body(api_req_t *r, char **out, size_t *len)
{
    long long cl = r->ri->content_length;
    size_t max = (size_t)cm_cfg.max_body_bytes, cap, n = 0;
    char *buf;

    *out = NULL;
    *len = 0;
    if (cl > (long long)max) return too_large(r); /* not read: civetweb discards it */
    cap = cl > 0 ? (size_t)cl + 1 : READ_CHUNK;
    if (!(buf = malloc(cap))) goto fail_oom;
    for (;;) {
        if (n + 1 >= cap) {
            size_t ncap = cap * 2 > max + 2 ? max + 2 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) goto fail_oom;
            buf = nb;
            cap = ncap;
        }
        int got = mg_read(r->conn, buf + n, cap - n - 1);
        if (got < 0) {
            free(buf);
            return api_error(r, 400, "INVALID_REQUEST", NULL, NULL,
                             "could not read the request body");
        }
        if (got == 0) break;
        n += (size_t)got;
        if (n > max) {
            free(buf);
            return too_large(r);
        }
    }
    if (cl > 0 && n < (size_t)cl) {
        free(buf);
        return api_error(r, 400, "INVALID_REQUEST", NULL, NULL, "the request body is incomplete");
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
fail_oom:
    free(buf);
    LOG_REQ_ERR(r->request_id, "out of memory reading a body");
    return api_error(r, 500, "INTERNAL_ERROR", NULL, NULL, "internal error");
}

#define JSON_MAX_DEPTH 64

/* 1 if the JSON text nests arrays/objects at most max deep. jansson parses recursively and
 * civetweb's request threads have small stacks: a deep document must be refused before
 * it is parsed. Malformed text passes here and is refused by the parser. */
static int json_depth_ok(const char *s, size_t len, int max)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max) return 0;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 1;
}

int api_read_json(api_req_t *r, int required, json_t **out)
{
    const char *ct = mg_get_header(r->conn, "Content-Type");
    json_error_t jerr;
    char *buf;
    size_t len;
    json_t *j;

    *out = NULL;
    if (read_body(r, &buf, &len) != 0) return -1;
    if (len == 0) {
        free(buf);
        if (!required) return 0;
        api_error(r, 400, "INVALID_REQUEST", NULL, NULL, "a JSON request body is required");
        return -1;
    }
    if (ct && !is_json_type(ct)) {
        free(buf);
        api_error(r, 415, "UNSUPPORTED_MEDIA_TYPE",
                  json_pack("{s:s}", "expected", "application/json"), NULL,
                  "the request body must be application/json");
        return -1;
    }
    if (!json_depth_ok(buf, len, JSON_MAX_DEPTH)) {
        free(buf);
        api_error(r, 400, "INVALID_REQUEST", json_pack("{s:i}", "maxDepth", JSON_MAX_DEPTH),
                  NULL, "JSON nested deeper than %d levels", JSON_MAX_DEPTH);
        return -1;
    }
    j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    if (!j) {
        api_error(r, 400, "INVALID_REQUEST",
                  json_pack("{s:i,s:i,s:i}", "line", jerr.line, "column", jerr.column,
                            "position", jerr.position),
                  NULL, "malformed JSON: %s", jerr.text);
        return -1;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_error(r, 422, "VALIDATION_ERROR", NULL, NULL, "the request body must be a JSON object");
        return -1;
    }
    *out = j;
    return 0;
}

/* ---- query string --------------------------------------------------------------- */

size_t api_utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80; /* not a continuation byte */
    return n;
}

const char *api_json_unknown_key(const json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        int known = 0;
        for (int i = 0; allowed[i] && !known; i++) known = strcmp(allowed[i], key) == 0;
        if (!known) return key;
    }
    return NULL;
}

int api_query_check(api_req_t *r, const char *const *names)
{
    const char *qs = r->ri->query_string, *p, *end, *eq;
    size_t used = 0;

    r->nq = 0;
    for (p = qs; p && *p; p = *end ? end + 1 : end) {
        char key[64];
        const char *name = NULL;
        int kn, vn;

        end = p + strcspn(p, "&");
        if (end == p) continue;
        eq = memchr(p, '=', (size_t)(end - p));
        kn = mg_url_decode(p, (int)((eq ? eq : end) - p), key, sizeof(key), 1);
        if (kn >= 0 && (strcmp(key, "api_key") == 0 || strcmp(key, "token") == 0))
            continue; /* a credential, taken by the gate on every route */
        for (int i = 0; kn >= 0 && names && names[i] && !name; i++)
            if (strcmp(names[i], key) == 0) name = names[i];
        if (!name) {
            const char *shown = kn >= 0 ? key : "?";
            api_error(r, 422, "VALIDATION_ERROR", json_pack("{s:s}", "field", shown), NULL,
                      "unknown query parameter '%s'", shown);
            return -1;
        }
        if (api_query(r, name)) {
            api_field_error(r, name, "query parameter '%s' is given more than once", name);
            return -1;
        }
        if (r->nq == API_QUERY_MAX || used >= sizeof(r->qbuf)) {
            vn = -1;
        } else if (eq) {
            vn = mg_url_decode(eq + 1, (int)(end - eq - 1), r->qbuf + used,
                               (int)(sizeof(r->qbuf) - used), 1);
        } else {
            r->qbuf[used] = '\0';
            vn = 0;
        }
        if (vn < 0) {
            api_field_error(r, name, "query parameter '%s' is too long", name);
            return -1;
        }
        r->qname[r->nq] = name;
        r->qval[r->nq++] = r->qbuf + used;
        used += (size_t)vn + 1;
    }
    return 0;
}

const char *api_query(const api_req_t *r, const char *name)
{
    for (int i = 0; i < r->nq; i++)
        if (r->qname[i] == name || strcmp(r->qname[i], name) == 0) return r->qval[i];
    return NULL;
}

int api_query_int(api_req_t *r, const char *name, long long min, long long max,
                  long long def, long long *out)
{
    const char *v = api_query(r, name);
    *out = def;
    if (!v) return 0;
    if (api_parse_int(v, min, max, out) == 0) return 0;
    api_field_error(r, name, "query parameter '%s' must be an integer from %lld to %lld", name,
                    min, max);
    return -1;
}

/* ---- parsers -------------------------------------------------------------------- */

int api_request_id_valid(const char *s)
{
    size_t n = 0;
    if (!s) return 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= API_REQ_ID_MAX ||
            !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n > 0;
}

/* Request ids need to be unique, not secret: a per-thread xorshift64* seeded once from
 * the OpenSSL RNG spares every request a trip through RAND_bytes and its locks. */
static _Thread_local uint64_t reqid_state;

void api_request_id(const char *client, char out[API_REQ_ID_MAX + 1])
{
    static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    if (api_request_id_valid(client)) {
        snprintf(out, API_REQ_ID_MAX + 1, "%s", client);
        return;
    }
    if (reqid_state == 0 && RAND_bytes((unsigned char *)&reqid_state, sizeof(reqid_state)) != 1)
        reqid_state = (uint64_t)cm_mono_ms() | 1;
    if (reqid_state == 0) reqid_state = 1;
    memcpy(out, "req_", 4);
    for (int i = 0; i < 20; i += 10) {
        reqid_state ^= reqid_state >> 12;
        reqid_state ^= reqid_state << 25;
        reqid_state ^= reqid_state >> 27;
        uint64_t v = reqid_state * 0x2545F4914F6CDD1DULL;
        for (int k = 0; k < 10; k++, v /= 62) out[4 + i + k] = b62[v % 62];
    }
    out[24] = '\0';
}

int api_parse_int(const char *s, long long min, long long max, long long *out)
{
    const char *p = s;
    char *end;
    long long v;

    if (!p) return -1;
    if (*p == '-') p++;
    if (*p < '0' || *p > '9') return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* Reads n decimal digits at s into *out. Returns 0 or -1 (stops at the first non-digit,
 * so it never reads past a NUL). */
static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

int api_parse_rfc3339(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, sec, frac = 0, off = 0;
    const char *p = s;

    if (!p || digits(p, 4, &y) || p[4] != '-' || digits(p + 5, 2, &mo) || p[7] != '-' ||
        digits(p + 8, 2, &d) || (p[10] != 'T' && p[10] != 't') || digits(p + 11, 2, &h) ||
        p[13] != ':' || digits(p + 14, 2, &mi) || p[16] != ':' || digits(p + 17, 2, &sec))
        return -1;
    p += 19;
    if (*p == '.') {
        int nd = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, nd++)
            if (nd < 3) frac = frac * 10 + (*p - '0');
        if (nd == 0) return -1;
        for (; nd < 3; nd++) frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = (*p == '-' ? -1 : 1) * (oh * 60 + om);
        p += 6;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 ||
        sec > 60)
        return -1;
    *ms = ((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec) - (int64_t)off * 60) *
              1000 + frac;
    return 0;
}
