/* tests/provider/http.c — parses HTTP/1.1 request heads for the test provider.
 *
 * Strict on purpose: the provider is a test fixture, so a broken client should get a
 * clear 400 rather than have its bytes guessed at (bare LF line ends, folded headers,
 * a bad or conflicting Content-Length, an unknown version are all refused). Bodies come
 * only by Content-Length; Transfer-Encoding gets 411. Everything is bounded by
 * PV_HTTP_HEAD_MAX, so parsing the head again on each read costs little. */
#include <string.h>
#include <strings.h>

#include "tests/provider/http.h"

/* RFC 9110 token characters (methods, header names). */
static int is_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z')) return 1;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Bytes allowed in a header value: visible ASCII, space, tab, and obs-text. */
static int is_vchar(unsigned char ch)
{
    return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

/* Checks the start of a request line whose end has not arrived, so that garbage (a TLS
 * hello, binary) is refused at once instead of after PV_HTTP_HEAD_MAX bytes. */
static int check_partial_line(const char *buf, size_t len)
{
    size_t i = 0;

    while (i < len && is_tchar((unsigned char)buf[i])) i++;
    if (i >= sizeof(((pv_http_req_t *)0)->method)) return PV_HTTP_EBAD;
    if (i == len) return len >= PV_HTTP_HEAD_MAX ? PV_HTTP_EHEAD : PV_HTTP_EAGAIN;
    if (buf[i] != ' ' || i == 0) return PV_HTTP_EBAD;
    for (i++; i < len; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (ch == '\r' && i + 1 == len) break; /* the CR of the line end */
        if (ch < 0x20 || ch >= 0x7f) return PV_HTTP_EBAD;
    }
    return len >= PV_HTTP_HEAD_MAX ? PV_HTTP_EHEAD : PV_HTTP_EAGAIN;
}

/* Parses "METHOD SP target SP HTTP/1.x" in [p, end) (end at the CR). Returns 0, the
 * minor version through *minor, or a negative PV_HTTP_* code. */
static int parse_request_line(const char *p, const char *end, pv_http_req_t *req, int *minor)
{
    size_t n = 0;

    while (p < end && is_tchar((unsigned char)*p) && n + 1 < sizeof(req->method))
        req->method[n++] = *p++;
    req->method[n] = '\0';
    if (n == 0 || p == end || *p++ != ' ') return PV_HTTP_EBAD;
    n = 0;
    while (p < end && *p != ' ') {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) return PV_HTTP_EBAD;
        if (n + 1 >= sizeof(req->target)) return PV_HTTP_ETARGET;
        req->target[n++] = *p++;
    }
    req->target[n] = '\0';
    /* origin-form only: this is not a proxy */
    if (n == 0 || req->target[0] != '/' || p == end) return PV_HTTP_EBAD;
    p++;
    if (end - p != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
        return PV_HTTP_EBAD;
    *minor = p[7] - '0';
    return 0;
}

/* Whether the comma-separated list [v, end) holds token (case-insensitive). */
static int list_has(const char *v, const char *end, const char *token)
{
    size_t tl = strlen(token);

    while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v)), *e = comma ? comma : end;
        while (v < e && (*v == ' ' || *v == '\t')) v++;
        const char *t = e;
        while (t > v && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if ((size_t)(t - v) == tl && strncasecmp(v, token, tl) == 0) return 1;
        v = comma ? comma + 1 : end;
    }
    return 0;
}

struct head_state {
    int has_length, length_big, chunked, close, keep;
    size_t length;
};

/* Parses one header line [p, end) (end at the CR). Returns 0 or PV_HTTP_EBAD. */
static int parse_header(const char *p, const char *end, pv_http_req_t *req,
                        struct head_state *st)
{
    const char *name = p, *v;
    size_t nl;

    while (p < end && is_tchar((unsigned char)*p)) p++;
    nl = (size_t)(p - name);
    /* no name, or a folded line (starts with white space): refused, RFC 9112 5.2 */
    if (nl == 0 || p == end || *p != ':') return PV_HTTP_EBAD;
    for (v = p + 1; v < end && (*v == ' ' || *v == '\t'); v++)
        ;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t')) end--;
    for (p = v; p < end; p++)
        if (!is_vchar((unsigned char)*p)) return PV_HTTP_EBAD;

    if (nl == 14 && strncasecmp(name, "Content-Length", nl) == 0) {
        size_t len = 0;
        int big = 0;
        if (v == end) return PV_HTTP_EBAD;
        for (p = v; p < end; p++) {
            if (*p < '0' || *p > '9') return PV_HTTP_EBAD;
            if (!big) len = len * 10 + (size_t)(*p - '0');
            if (len > PV_HTTP_BODY_MAX) big = 1;
        }
        /* two lengths that differ make the body's end ambiguous */
        if (st->has_length && (big != st->length_big || (!big && len != st->length)))
            return PV_HTTP_EBAD;
        st->has_length = 1;
        st->length_big = big;
        st->length = len;
    } else if (nl == 17 && strncasecmp(name, "Transfer-Encoding", nl) == 0) {
        st->chunked = 1;
    } else if (nl == 10 && strncasecmp(name, "Connection", nl) == 0) {
        st->close |= list_has(v, end, "close");
        st->keep |= list_has(v, end, "keep-alive");
    } else if (nl == 13 && strncasecmp(name, "Authorization", nl) == 0) {
        if (req->auth) return PV_HTTP_EBAD;
        req->auth = v;
        req->auth_len = (size_t)(end - v);
    } else if (nl == 6 && strncasecmp(name, "Expect", nl) == 0) {
        req->expect_continue = (size_t)(end - v) == 12 && strncasecmp(v, "100-continue", 12) == 0;
    }
    return 0;
}

int pv_http_parse(const char *buf, size_t len, pv_http_req_t *req)
{
    size_t lim = len < PV_HTTP_HEAD_MAX ? len : PV_HTTP_HEAD_MAX;
    const char *p = buf, *end = buf + lim, *eol;
    struct head_state st = {0};
    int minor = 1, rc;

    memset(req, 0, sizeof(*req));
    if (len == 0) return PV_HTTP_EAGAIN; /* buf may be NULL then */
    eol = memchr(p, '\n', lim);
    if (!eol) return check_partial_line(buf, lim);
    if (eol == p || eol[-1] != '\r') return PV_HTTP_EBAD;
    rc = parse_request_line(p, eol - 1, req, &minor);
    if (rc < 0) return rc;
    for (p = eol + 1;; p = eol + 1) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) return len >= PV_HTTP_HEAD_MAX ? PV_HTTP_EHEAD : PV_HTTP_EAGAIN;
        if (eol == p || eol[-1] != '\r') return PV_HTTP_EBAD;
        if (eol - 1 == p) break; /* the empty line: end of head */
        rc = parse_header(p, eol - 1, req, &st);
        if (rc < 0) return rc;
    }
    req->head_len = (size_t)(eol + 1 - buf);
    if (st.chunked) return PV_HTTP_ELENGTH;
    if (st.length_big) return PV_HTTP_EBODY;
    req->body_len = st.length;
    req->keep_alive = minor == 1 ? !st.close : st.keep && !st.close;
    return 0;
}

const char *pv_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

int pv_http_error_status(int err)
{
    switch (err) {
    case PV_HTTP_EBAD: return 400;
    case PV_HTTP_EHEAD: return 431;
    case PV_HTTP_ETARGET: return 414;
    case PV_HTTP_EBODY: return 413;
    case PV_HTTP_ELENGTH: return 411;
    default: return 0;
    }
}
