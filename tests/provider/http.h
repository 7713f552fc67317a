/* tests/provider/http.h — the HTTP/1.1 request heads the test provider understands. */
#ifndef PV_HTTP_H
#define PV_HTTP_H

#include <stddef.h>

#define PV_HTTP_HEAD_MAX 16384         /* request line + headers; larger: 431 */
#define PV_HTTP_BODY_MAX (4u << 20)    /* Content-Length; larger: 413 */
#define PV_HTTP_TARGET_MAX 1024        /* request target with its NUL; larger: 414 */

enum {
    PV_HTTP_EAGAIN = -1,  /* the head is not complete yet: read more */
    PV_HTTP_EBAD = -2,    /* malformed: 400 */
    PV_HTTP_EHEAD = -3,   /* no end of head within PV_HTTP_HEAD_MAX: 431 */
    PV_HTTP_ETARGET = -4, /* request target too long: 414 */
    PV_HTTP_EBODY = -5,   /* Content-Length over PV_HTTP_BODY_MAX: 413 */
    PV_HTTP_ELENGTH = -6, /* Transfer-Encoding (only Content-Length bodies): 411 */
};

typedef struct pv_http_req {
    char method[16];
    char target[PV_HTTP_TARGET_MAX];
    int keep_alive;        /* the connection stays open after the answer */
    int expect_continue;   /* "Expect: 100-continue" */
    size_t head_len;       /* bytes of the head, the empty line included */
    size_t body_len;       /* Content-Length; 0 when absent */
    const char *auth;      /* Authorization value, inside the parsed buffer; NULL: none */
    size_t auth_len;
} pv_http_req_t;

/* Parses the request head at the start of buf (len bytes). Returns 0 with *req filled
 * (auth borrows buf), or a negative PV_HTTP_* code. Bad bytes in the request line are
 * refused as soon as they arrive, before the end of the head. */
int pv_http_parse(const char *buf, size_t len, pv_http_req_t *req);

/* The reason phrase of status (a static string). */
const char *pv_http_reason(int status);

/* The status a PV_HTTP_* error is answered with (0 for PV_HTTP_EAGAIN). */
int pv_http_error_status(int err);

#endif
