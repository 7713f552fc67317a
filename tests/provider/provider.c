/* tests/provider/provider.c — an OpenAI-compatible chat completions server for tests and
 * `make run`: deterministic replies, honest token counts, and knobs for latency, errors,
 * 429 bursts and hangs.
 *
 *   conveyor-test-provider --port N [--host 127.0.0.1] [--api-key K] [--latency-ms M]
 *       [--jitter-ms J] [--error-rate R] [--error-status S] [--rate-429 R]
 *       [--retry-after SEC] [--hang-rate R] [--seed N] [--max-conns N]
 *
 * Prints "listening on HOST:PORT" when ready (port 0: a free one); SIGTERM/SIGINT exit 0.
 * POST /v1/chat/completions answers "Echo: " + the last user message after the latency;
 * tokens are whitespace-separated words. Markers in the last user message override the
 * knobs for one request: [[status:NNN]], [[hang]], [[delay:MS]]. POST /_control sets the
 * knobs (KNOBS below), GET /_stats reports, POST /_reset zeroes the stats. GET /v1/models.
 *
 * One libuv loop, HTTP/1.1 with keep-alive and pipelining (one request of a connection
 * answered at a time, in order). Everything a client can grow is bounded: a request
 * (head 16 KiB → 431, body 4 MiB → 413), the answers queued to a client that does not
 * read, the number of connections, idle time. Errors in the HTTP framing are answered
 * with Connection: close, then the connection drains what the client still sends for a
 * moment before it closes, so that the client reads the answer rather than a reset. */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "tests/provider/http.h"

#define ARRIVALS_MAX 10000
#define CONNS_MAX 10000 /* default --max-conns; lowered to fit RLIMIT_NOFILE */
#define BUF_MIN 16384
#define BUF_MAX (PV_HTTP_HEAD_MAX + PV_HTTP_BODY_MAX) /* one whole request */
#define WQ_MAX (8u << 20) /* bytes of answers queued to one client before we stop parsing */
#define IDLE_MS 60000     /* a connection with no complete request for this long closes */
#define LINGER_MS 2000    /* how long a closing connection drains what the client sends */
#define DELAY_MAX_MS 3600000
#define STATUS_SLOTS 600

/* ---- knobs: one table for the flags, /_control and its answer --------------------- */

enum {
    KN_LATENCY, KN_JITTER, KN_ERROR_RATE, KN_ERROR_STATUS, KN_RATE_429, KN_RETRY_AFTER,
    KN_HANG_RATE, KN_FAIL_NEXT, KN_FAIL_STATUS, KN_COUNT
};

static const struct knob {
    const char *json, *flag; /* flag NULL: only through /_control */
    double min, max, def;
    int integer;
} KNOBS[KN_COUNT] = {
    [KN_LATENCY] = {"latencyMs", "--latency-ms", 0, DELAY_MAX_MS, 0, 0},
    [KN_JITTER] = {"jitterMs", "--jitter-ms", 0, DELAY_MAX_MS, 0, 0},
    [KN_ERROR_RATE] = {"errorRate", "--error-rate", 0, 1, 0, 0},
    [KN_ERROR_STATUS] = {"errorStatus", "--error-status", 400, 599, 500, 1},
    [KN_RATE_429] = {"rate429", "--rate-429", 0, 1, 0, 0},
    [KN_RETRY_AFTER] = {"retryAfter", "--retry-after", 0, 86400, 1, 1},
    [KN_HANG_RATE] = {"hangRate", "--hang-rate", 0, 1, 0, 0},
    [KN_FAIL_NEXT] = {"failNext", NULL, 0, 1e9, 0, 1},
    [KN_FAIL_STATUS] = {"failStatus", NULL, 400, 599, 500, 1},
};

/* ---- state ------------------------------------------------------------------------ */

typedef struct conn conn_t;

enum { C_IDLE, C_WAITING, C_ENDING, C_CLOSED };

/* One response, written whole; data follows the struct. */
struct out {
    uv_write_t req;
    size_t len;
    char data[];
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* C_IDLE: idle; C_WAITING: latency (none for a hang); C_ENDING: linger */
    uv_shutdown_t shutdown;
    conn_t *prev, *next;
    int state;        /* C_* */
    int handles;      /* open uv handles; the conn is freed when the last one closes */
    char *buf;        /* received bytes; [off, len) not parsed yet */
    size_t off, len, cap;
    int paused;       /* reading stopped: the buffer is full */
    int blocked;      /* parsing stopped: too many answer bytes queued */
    int eof;          /* the client closed its side */
    int shut_done;    /* our side is shut down */
    int continued;    /* "100 Continue" sent for the request being received */
    int counted;      /* a chat request of this connection counts in P.in_flight */
    int hang;         /* C_WAITING forever */
    struct out *pending; /* C_WAITING: the answer, sent when the timer fires */
    int pending_status, pending_keep;
};

static struct {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_signal_t sigterm, sigint;
    const char *api_key;
    double knob[KN_COUNT];
    uint64_t rng;
    long long counter; /* chatcmpl-<counter> */
    conn_t *conns;
    int nconns, max_conns, stopping;
    /* stats */
    long long requests, by_status[STATUS_SLOTS];
    int in_flight, max_in_flight;
    double arrivals[ARRIVALS_MAX]; /* a ring: the last ARRIVALS_MAX chat requests */
    int arr_start, arr_len;
} P;

static void conn_drive(conn_t *c);
static void conn_end(conn_t *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void on_timer(uv_timer_t *t);

/* ---- small helpers ---------------------------------------------------------------- */

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A uniform double in [0, 1) from splitmix64, so that --seed replays a run exactly. */
static double rnd(void)
{
    uint64_t z = (P.rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* Whether a random draw falls under rate; draws only for a rate above 0, so that a run
 * with the same seed and knobs makes the same choices. */
static int chance(double rate) { return rate > 0 && rnd() < rate; }

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* The tokens of s: runs of non-whitespace (ASCII whitespace). */
static long long count_words(const char *s)
{
    long long n = 0;
    int in = 0;

    for (; *s; s++) {
        int sp = is_space(*s);
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}

/* ---- connections: writing, ending, closing ---------------------------------------- */

static void on_closed(uv_handle_t *h)
{
    conn_t *c = h->data;

    if (--c->handles > 0) return;
    if (c->prev) c->prev->next = c->next;
    else P.conns = c->next;
    if (c->next) c->next->prev = c->prev;
    P.nconns--;
    free(c->buf);
    free(c);
}

/* Closes c now: what is queued is dropped, a request in flight stops counting. */
static void conn_close(conn_t *c)
{
    if (c->state == C_CLOSED) return;
    c->state = C_CLOSED;
    if (c->counted) {
        c->counted = 0;
        P.in_flight--;
    }
    free(c->pending);
    c->pending = NULL;
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_written(uv_write_t *w, int status)
{
    conn_t *c = w->handle->data;

    free(w); /* the struct out */
    if (c->state == C_CLOSED) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->blocked && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= WQ_MAX / 2) {
        c->blocked = 0;
        conn_drive(c);
    }
}

/* A response: status line, headers (extra: more "Name: value\r\n" lines), body. Borrows
 * everything. Returns NULL when out of memory. */
static struct out *out_new(int status, const char *extra, const char *body, size_t blen,
                           int keep)
{
    char head[512];
    struct out *o;
    int n;

    if (status == 100) {
        n = snprintf(head, sizeof(head), "HTTP/1.1 100 Continue\r\n\r\n");
    } else {
        n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%sConnection: %s\r\n\r\n",
                     status, pv_http_reason(status), blen, extra ? extra : "",
                     keep ? "keep-alive" : "close");
    }
    if (n < 0 || (size_t)n >= sizeof(head)) return NULL;
    o = malloc(sizeof(*o) + (size_t)n + blen);
    if (!o) return NULL;
    memcpy(o->data, head, (size_t)n);
    if (blen) memcpy(o->data + n, body, blen);
    o->len = (size_t)n + blen;
    return o;
}

/* Queues o (taken) on c. Returns 0, or -1 after closing c. */
static int conn_send(conn_t *c, struct out *o)
{
    uv_buf_t b;

    if (!o) {
        conn_close(c);
        return -1;
    }
    b = uv_buf_init(o->data, (unsigned)o->len);
    if (uv_write(&o->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(o);
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Sends a response now; without keep the connection ends after it. Returns 0 or -1
 * (c closed). */
static int respond(conn_t *c, int status, const char *extra, const char *body, int keep)
{
    if (conn_send(c, out_new(status, extra, body, body ? strlen(body) : 0, keep)) < 0)
        return -1;
    if (!keep) conn_end(c);
    return 0;
}

/* Sends j (taken) as the body of a response. Returns 0 or -1 (c closed). */
static int respond_json(conn_t *c, int status, const char *extra, json_t *j, int keep)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    int rc = -1;

    json_decref(j);
    if (s) rc = respond(c, status, extra, s, keep);
    else conn_close(c);
    free(s);
    return rc;
}

/* OpenAI's error body: {"error":{"message","type","param","code"}}; NULL on ENOMEM. */
static json_t *openai_error(const char *message, const char *type, const char *param,
                            const char *code)
{
    return json_pack("{s:{s:s,s:s,s:s?,s:s?}}", "error", "message", message, "type", type,
                     "param", param, "code", code);
}

/* The error type OpenAI uses for a status. */
static const char *error_type(int status)
{
    if (status == 429) return "rate_limit_error";
    return status >= 500 ? "server_error" : "invalid_request_error";
}

static int respond_error(conn_t *c, int status, const char *message, const char *param,
                         const char *code, const char *extra, int keep)
{
    return respond_json(c, status, extra, openai_error(message, error_type(status), param, code),
                        keep);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;

    if (c->state == C_CLOSED) return;
    c->shut_done = 1;
    if (status < 0 || c->eof) conn_close(c);
}

/* Ends c gracefully: nothing more is parsed or answered; our side shuts down once the
 * queued answers are written; what the client still sends is read and dropped until it
 * closes too or LINGER_MS pass. */
static void conn_end(conn_t *c)
{
    if (c->state == C_ENDING || c->state == C_CLOSED) return;
    c->state = C_ENDING;
    c->off = c->len = 0;
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    /* read again, to drop what the client sends rather than reset it on close */
    if (c->paused && !c->eof) {
        c->paused = 0;
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) conn_close(c);
    }
}

/* ---- chat completions ------------------------------------------------------------- */

/* Counts one chat request as arrived and in flight on c. */
static void chat_arrived(conn_t *c)
{
    double now = wall_ms();

    P.requests++;
    if (P.arr_len < ARRIVALS_MAX) {
        P.arrivals[(P.arr_start + P.arr_len++) % ARRIVALS_MAX] = now;
    } else {
        P.arrivals[P.arr_start] = now;
        P.arr_start = (P.arr_start + 1) % ARRIVALS_MAX;
    }
    c->counted = 1;
    if (++P.in_flight > P.max_in_flight) P.max_in_flight = P.in_flight;
}

/* Counts the chat request of c as answered with status. */
static void chat_answered(conn_t *c, int status)
{
    if (c->counted) {
        c->counted = 0;
        P.in_flight--;
    }
    if (status >= 0 && status < STATUS_SLOTS) P.by_status[status]++;
}

static int chat_error(conn_t *c, int status, const char *message, const char *param,
                      const char *code, int keep)
{
    chat_answered(c, status);
    return respond_error(c, status, message, param, code, NULL, keep);
}

/* What a valid request asked for. */
struct chat {
    const char *model;
    const json_t *last;   /* content of the last user message; NULL: none */
    long long prompt;     /* prompt tokens */
    long long max_tokens; /* 0: no limit */
    char why[128], param[48];
};

/* Counts the words of a message's content (a string, or an array of text parts) into
 * *words. Returns 0, or -1 when content is neither. */
static int content_words(const json_t *content, long long *words)
{
    const json_t *part;
    size_t i;

    *words = 0;
    if (json_is_string(content)) {
        *words = count_words(json_string_value(content));
        return 0;
    }
    if (!json_is_array(content)) return -1;
    json_array_foreach(content, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        const json_t *text = json_object_get(part, "text");
        if (!type || strcmp(type, "text") != 0 || !json_is_string(text)) return -1;
        *words += count_words(json_string_value(text));
    }
    return 0;
}

/* Checks a chat request and reads what it asks for into *ch. Returns 0, or -1 with
 * ch->why and ch->param (empty: none) set for a 400. */
static int chat_check(const json_t *req, struct chat *ch)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
    const json_t *msgs, *m, *v;
    const char *name;
    size_t i;

#define BAD(param_, ...) do { \
        snprintf(ch->param, sizeof(ch->param), "%s", param_); \
        snprintf(ch->why, sizeof(ch->why), __VA_ARGS__); \
        return -1; \
    } while (0)
    memset(ch, 0, sizeof(*ch));
    if (!json_is_object(req)) BAD("", "the body must be a JSON object");
    v = json_object_get(req, "model");
    if (!json_is_string(v) || json_string_length(v) == 0)
        BAD("model", "model must be a non-empty string");
    ch->model = json_string_value(v);
    msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        BAD("messages", "messages must be a non-empty array");
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const json_t *content = json_object_get(m, "content");
        long long words;
        size_t r = 0;
        char field[48];

        if (!json_is_object(m)) {
            snprintf(field, sizeof(field), "messages[%zu]", i);
            BAD(field, "%s must be an object", field);
        }
        while (role && r < sizeof(roles) / sizeof(roles[0]) && strcmp(role, roles[r]) != 0) r++;
        if (!role || r == sizeof(roles) / sizeof(roles[0])) {
            snprintf(field, sizeof(field), "messages[%zu].role", i);
            BAD(field, "%s must be one of system, user, assistant, tool, developer", field);
        }
        if (content_words(content, &words) < 0) {
            snprintf(field, sizeof(field), "messages[%zu].content", i);
            BAD(field, "%s must be a string (or an array of text parts)", field);
        }
        ch->prompt += words + 3;
        if (strcmp(role, "user") == 0) ch->last = content;
    }
    v = json_object_get(req, "stream");
    if (v && !json_is_false(v) && !json_is_null(v))
        BAD("stream", "stream is not supported by this provider");
    name = json_object_get(req, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    v = json_object_get(req, name);
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            BAD(name, "%s must be a positive integer", name);
        ch->max_tokens = json_integer_value(v);
    }
    return 0;
#undef BAD
}

/* "Echo: " + the text of content (text parts joined by newlines), in a new string;
 * NULL when out of memory. */
static char *echo_text(const json_t *content)
{
    static const char prefix[] = "Echo: ";
    const json_t *part;
    size_t i, len = sizeof(prefix);
    char *s, *p;

    if (json_is_string(content)) {
        len += json_string_length(content);
    } else {
        json_array_foreach(content, i, part)
            len += json_string_length(json_object_get(part, "text")) + 1;
    }
    if (!(s = malloc(len))) return NULL;
    p = s + sizeof(prefix) - 1;
    memcpy(s, prefix, sizeof(prefix));
    if (json_is_string(content)) {
        memcpy(p, json_string_value(content), json_string_length(content) + 1);
        return s;
    }
    json_array_foreach(content, i, part) {
        const json_t *text = json_object_get(part, "text");
        if (i > 0) *p++ = '\n';
        memcpy(p, json_string_value(text), json_string_length(text));
        p += json_string_length(text);
    }
    *p = '\0';
    return s;
}

/* What a request is answered with, after the knobs and markers. */
struct outcome {
    int status, hang;
    double delay_ms;
};

/* Reads "<digits>]]" at s into *n (at most max). Returns 0, or -1 if s is not that. */
static int marker_number(const char *s, long max, long *n)
{
    char *end;

    if (*s < '0' || *s > '9') return -1;
    *n = strtol(s, &end, 10);
    return strncmp(end, "]]", 2) == 0 && *n <= max ? 0 : -1;
}

/* Applies the knobs, then the markers of text (the last user message) over them. */
static void decide(const char *text, struct outcome *o)
{
    int marked = 0;
    long n;

    o->status = 200;
    o->hang = 0;
    o->delay_ms = P.knob[KN_LATENCY] + (P.knob[KN_JITTER] > 0 ? rnd() * P.knob[KN_JITTER] : 0);
    for (const char *p = strstr(text, "[["); p; p = strstr(p + 2, "[[")) {
        if (strncmp(p, "[[hang]]", 8) == 0) {
            o->hang = marked = 1;
        } else if (strncmp(p, "[[status:", 9) == 0 && marker_number(p + 9, 599, &n) == 0 &&
                   n >= 200) {
            o->status = (int)n;
            marked = 1;
        } else if (strncmp(p, "[[delay:", 8) == 0 && marker_number(p + 8, DELAY_MAX_MS, &n) == 0) {
            o->delay_ms = (double)n;
        }
    }
    /* a request whose outcome a marker chose does not use up failNext */
    if (marked) return;
    if (P.knob[KN_FAIL_NEXT] >= 1) {
        P.knob[KN_FAIL_NEXT]--;
        o->status = (int)P.knob[KN_FAIL_STATUS];
    } else if (chance(P.knob[KN_HANG_RATE])) {
        o->hang = 1;
    } else if (chance(P.knob[KN_RATE_429])) {
        o->status = 429;
    } else if (chance(P.knob[KN_ERROR_RATE])) {
        o->status = (int)P.knob[KN_ERROR_STATUS];
    }
}

/* Cuts reply (after "Echo: ") to max words; returns the words it keeps. */
static long long cut_words(char *reply, long long max, long long words)
{
    long long n = 0;
    int in = 0;
    char *p;

    if (max <= 0 || words <= max) return words;
    for (p = reply; *p; p++) {
        int sp = is_space(*p);
        if (!sp && !in && ++n > max) break;
        in = !sp;
    }
    while (p > reply && is_space(p[-1])) p--;
    *p = '\0';
    return max;
}

/* The body of a 200: the completion with its usage. Returns NULL on ENOMEM. */
/* created: from CLOCK_REALTIME, as clients compare it with their clocks; time() reads
 * the coarse clock, up to a tick behind, and gave a second too early at a boundary. */
static json_t *completion(const struct chat *ch, char *reply)
{
    long long words = count_words(reply), c = cut_words(reply, ch->max_tokens, words);
    char id[40];
    json_int_t created = (json_int_t)(wall_ms() / 1e3);

    snprintf(id, sizeof(id), "chatcmpl-%lld", ++P.counter);
    return json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:s,s:s},s:s}],s:{s:I,s:I,s:I}}",
                     "id", id, "object", "chat.completion", "created", created,
                     "model", ch->model, "choices", "index", 0, "message", "role", "assistant",
                     "content", reply, "finish_reason", c < words ? "length" : "stop",
                     "usage", "prompt_tokens", (json_int_t)ch->prompt, "completion_tokens",
                     (json_int_t)c, "total_tokens", (json_int_t)(ch->prompt + c));
}

/* Whether the Authorization value is "Bearer <api key>". */
static int authorized(const pv_http_req_t *req)
{
    const char *v = req->auth, *end = v + req->auth_len;
    size_t kl = strlen(P.api_key);

    if (!v || req->auth_len < 7 || strncasecmp(v, "Bearer ", 7) != 0) return 0;
    for (v += 7; v < end && *v == ' '; v++)
        ;
    return (size_t)(end - v) == kl && memcmp(v, P.api_key, kl) == 0;
}

/* POST /v1/chat/completions. The answer goes now (401, 400) or after the latency. */
static void chat(conn_t *c, const pv_http_req_t *req, const char *body)
{
    json_t *j = NULL, *answer = NULL;
    struct chat ch;
    struct outcome o;
    char *reply = NULL, *s = NULL, extra[64] = "", msg[64];
    int keep = req->keep_alive;

    chat_arrived(c);
    if (P.api_key && !authorized(req)) {
        chat_error(c, 401, "Incorrect API key provided.", NULL, "invalid_api_key", keep);
        goto out;
    }
    j = json_loadb(body, req->body_len, 0, NULL);
    if (chat_check(j, &ch) < 0) {
        chat_error(c, 400, ch.why, ch.param[0] ? ch.param : NULL, NULL, keep);
        goto out;
    }
    if (!(reply = ch.last ? echo_text(ch.last) : strdup("Echo: "))) goto nomem;
    decide(reply + 6, &o);
    if (o.status == 429)
        snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", (int)P.knob[KN_RETRY_AFTER]);
    if (o.status != 200) {
        snprintf(msg, sizeof(msg), "injected status %d (test provider)", o.status);
        answer = openai_error(msg, error_type(o.status), NULL,
                              o.status == 429 ? "rate_limit_exceeded" : NULL);
    } else {
        answer = completion(&ch, reply);
    }
    if (!answer || !(s = json_dumps(answer, JSON_COMPACT))) goto nomem;
    if (!(c->pending = out_new(o.status, extra, s, strlen(s), keep))) goto nomem;
    c->pending_status = o.status;
    c->pending_keep = keep;
    c->hang = o.hang;
    c->state = C_WAITING;
    if (!o.hang) {
        uv_timer_start(&c->timer, on_timer, (uint64_t)(o.delay_ms + 0.5), 0);
    } else if (c->eof) {
        conn_close(c); /* the client has gone already (reading stopped at its EOF) */
    } else {
        uv_timer_stop(&c->timer); /* until the client goes away */
    }
    goto out;
nomem:
    conn_close(c);
out:
    free(s);
    json_decref(answer);
    free(reply);
    json_decref(j);
}

/* ---- control, stats, models ------------------------------------------------------- */

static json_t *settings(void)
{
    json_t *j = json_object();

    for (int i = 0; j && i < KN_COUNT; i++) {
        json_t *v = KNOBS[i].integer ? json_integer((json_int_t)P.knob[i]) : json_real(P.knob[i]);
        if (json_object_set_new(j, KNOBS[i].json, v) != 0) {
            json_decref(j);
            return NULL;
        }
    }
    return j;
}

/* POST /_control: checks every key first, so that a bad request changes nothing. */
static void control(conn_t *c, const pv_http_req_t *req, const char *body)
{
    json_t *j = json_loadb(body, req->body_len, 0, NULL), *v;
    double next[KN_COUNT];
    const char *key;
    char why[160];

    memcpy(next, P.knob, sizeof(next));
    if (!json_is_object(j)) {
        respond_error(c, 400, "the body must be a JSON object", NULL, NULL, NULL, req->keep_alive);
        goto out;
    }
    json_object_foreach(j, key, v) {
        int i = 0;
        while (i < KN_COUNT && strcmp(KNOBS[i].json, key) != 0) i++;
        if (i == KN_COUNT) {
            snprintf(why, sizeof(why), "unknown setting %.64s", key);
            respond_error(c, 400, why, key, NULL, NULL, req->keep_alive);
            goto out;
        }
        if (!json_is_number(v) || (KNOBS[i].integer && !json_is_integer(v)) ||
            json_number_value(v) < KNOBS[i].min || json_number_value(v) > KNOBS[i].max) {
            snprintf(why, sizeof(why), "%s must be %s from %g to %g", key,
                     KNOBS[i].integer ? "an integer" : "a number", KNOBS[i].min, KNOBS[i].max);
            respond_error(c, 400, why, key, NULL, NULL, req->keep_alive);
            goto out;
        }
        next[i] = json_number_value(v);
    }
    memcpy(P.knob, next, sizeof(next));
    respond_json(c, 200, NULL, settings(), req->keep_alive);
out:
    json_decref(j);
}

static json_t *stats(void)
{
    json_t *by = json_object(), *arr = json_array();
    char key[16];

    for (int s = 0; by && s < STATUS_SLOTS; s++) {
        if (!P.by_status[s]) continue;
        snprintf(key, sizeof(key), "%d", s);
        if (json_object_set_new(by, key, json_integer(P.by_status[s])) != 0) goto fail;
    }
    for (int i = 0; arr && i < P.arr_len; i++) {
        double t = P.arrivals[(P.arr_start + i) % ARRIVALS_MAX];
        if (json_array_append_new(arr, json_real(t)) != 0) goto fail;
    }
    if (!by || !arr) goto fail;
    return json_pack("{s:I,s:i,s:i,s:o,s:o}", "requests", (json_int_t)P.requests, "inFlight",
                     P.in_flight, "maxInFlight", P.max_in_flight, "byStatus", by, "arrivals", arr);
fail:
    json_decref(by);
    json_decref(arr);
    return NULL;
}

static void reset_stats(void)
{
    P.requests = 0;
    memset(P.by_status, 0, sizeof(P.by_status));
    P.arr_start = P.arr_len = 0;
    P.max_in_flight = P.in_flight; /* what is still in flight stays counted */
}

/* Whether the path of target (before any query) is path. */
static int path_is(const char *target, const char *path)
{
    size_t n = strlen(path);
    return strncmp(target, path, n) == 0 && (target[n] == '\0' || target[n] == '?');
}

/* Answers one complete request whose body is at body. */
static void route(conn_t *c, const pv_http_req_t *req, const char *body)
{
    static const struct { const char *path, *method; } routes[] = {
        {"/v1/chat/completions", "POST"}, {"/v1/models", "GET"}, {"/_control", "POST"},
        {"/_stats", "GET"}, {"/_reset", "POST"},
    };
    const char *t = req->target;
    int keep = req->keep_alive;
    size_t i = 0;
    char allow[32];

    while (i < sizeof(routes) / sizeof(routes[0]) && !path_is(t, routes[i].path)) i++;
    if (i == sizeof(routes) / sizeof(routes[0])) {
        respond_error(c, 404, "no such endpoint", NULL, NULL, NULL, keep);
        return;
    }
    if (strcmp(req->method, routes[i].method) != 0) {
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", routes[i].method);
        respond_error(c, 405, "method not allowed", NULL, NULL, allow, keep);
        return;
    }
    if (i == 0) {
        chat(c, req, body);
    } else if (i == 1) {
        if (P.api_key && !authorized(req))
            respond_error(c, 401, "Incorrect API key provided.", NULL, "invalid_api_key", NULL,
                          keep);
        else
            respond_json(c, 200, NULL,
                         json_pack("{s:s,s:[{s:s,s:s,s:i,s:s}]}", "object", "list", "data", "id",
                                   "test-echo", "object", "model", "created", 0, "owned_by",
                                   "conveyor-test"),
                         keep);
    } else if (i == 2) {
        control(c, req, body);
    } else if (i == 3) {
        respond_json(c, 200, NULL, stats(), keep);
    } else {
        reset_stats();
        respond_json(c, 200, NULL, stats(), keep);
    }
}

/* ---- reading and parsing ---------------------------------------------------------- */

/* Answers the complete requests in c's buffer in order, while c is idle (one request
 * at a time: the next waits for the answer to the previous one). */
static void conn_drive(conn_t *c)
{
    pv_http_req_t req;
    int rc;

    while (c->state == C_IDLE && !c->blocked) {
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WQ_MAX) {
            c->blocked = 1; /* the client does not read its answers: wait for it */
            break;
        }
        rc = pv_http_parse(c->buf + c->off, c->len - c->off, &req);
        if (rc == PV_HTTP_EAGAIN) break;
        if (rc < 0) {
            respond_error(c, pv_http_error_status(rc), "malformed or oversized request", NULL,
                          NULL, NULL, 0);
            return;
        }
        if (c->len - c->off - req.head_len < req.body_len) {
            if (req.expect_continue && !c->continued) {
                c->continued = 1;
                if (conn_send(c, out_new(100, NULL, NULL, 0, 1)) < 0) return;
            }
            break;
        }
        route(c, &req, c->buf + c->off + req.head_len);
        if (c->state == C_CLOSED || c->state == C_ENDING) return;
        c->continued = 0;
        c->off += req.head_len + req.body_len;
        if (c->off == c->len) {
            /* nothing buffered: give the memory back (thousands of idle connections) */
            free(c->buf);
            c->buf = NULL;
            c->off = c->len = c->cap = 0;
        }
    }
    if (c->state != C_IDLE) return;
    if (c->eof) {
        conn_end(c);
        return;
    }
    if (c->paused && !c->blocked) {
        c->paused = 0;
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
            conn_close(c);
            return;
        }
    }
    uv_timer_start(&c->timer, on_timer, IDLE_MS, 0);
}

static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    struct out *o = c->pending;

    if (c->state != C_WAITING) { /* idle too long, or done lingering */
        conn_close(c);
        return;
    }
    c->pending = NULL;
    c->state = C_IDLE;
    chat_answered(c, c->pending_status);
    if (conn_send(c, o) < 0) return;
    if (!c->pending_keep) conn_end(c);
    else conn_drive(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char discard[65536]; /* C_ENDING reads here and drops it (one thread) */
    conn_t *c = h->data;
    size_t room;

    (void)suggested;
    if (c->state != C_IDLE && c->state != C_WAITING) {
        *b = uv_buf_init(discard, sizeof(discard));
        return;
    }
    if (c->cap - c->len < 4096 && c->off > 0) { /* move the unparsed bytes to the front */
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->cap - c->len < 4096 && c->cap < BUF_MAX) {
        size_t cap = c->cap ? c->cap * 2 : BUF_MIN;
        char *n = realloc(c->buf, cap < BUF_MAX ? cap : BUF_MAX);
        if (n) {
            c->buf = n;
            c->cap = cap < BUF_MAX ? cap : BUF_MAX;
        }
    }
    room = c->cap - c->len;
    *b = uv_buf_init(room ? c->buf + c->len : NULL, (unsigned)(room < 65536 ? room : 65536));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn_t *c = s->data;

    (void)b;
    if (c->state == C_CLOSED) return;
    if (n == UV_EOF) {
        c->eof = 1;
        uv_read_stop(s);
        if (c->state == C_ENDING) {
            if (c->shut_done) conn_close(c);
        } else if (c->state == C_WAITING) {
            if (c->hang) conn_close(c); /* the client went away: a hang ends here */
        } else {
            conn_drive(c); /* answers what is complete, then ends */
        }
        return;
    }
    if (n == UV_ENOBUFS) {
        /* the buffer holds a whole request; wait until it has been answered */
        if (c->state == C_IDLE && !c->blocked) {
            conn_close(c); /* idle with a full buffer: realloc failed */
            return;
        }
        uv_read_stop(s);
        c->paused = 1;
        return;
    }
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (c->state == C_ENDING) return; /* dropped */
    c->len += (size_t)n;
    if (c->state == C_IDLE) conn_drive(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    conn_t *c;

    /* without memory the connection stays in the backlog; nothing better to do */
    if (status < 0 || !(c = calloc(1, sizeof(*c)))) return;
    uv_tcp_init(&P.loop, &c->tcp);
    uv_timer_init(&P.loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    c->next = P.conns;
    if (P.conns) P.conns->prev = c;
    P.conns = c;
    P.nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || P.nconns > P.max_conns ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c); /* over the limit: accepted and closed at once */
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, on_timer, IDLE_MS, 0);
}

/* ---- start-up and shutdown -------------------------------------------------------- */

static void on_signal(uv_signal_t *s, int sig)
{
    (void)s;
    (void)sig;
    if (P.stopping) return;
    P.stopping = 1;
    uv_close((uv_handle_t *)&P.server, NULL);
    uv_close((uv_handle_t *)&P.sigterm, NULL);
    uv_close((uv_handle_t *)&P.sigint, NULL);
    for (conn_t *c = P.conns; c; c = c->next) conn_close(c);
}

/* Parses a number flag value in [min, max] (integer if asked). Returns 0 or -1. */
static int parse_number(const char *s, double min, double max, int integer, double *out)
{
    char *end;
    double v;

    if (!s || !*s) return -1;
    v = strtod(s, &end);
    if (*end || v != v || v < min || v > max || (integer && v != (double)(long long)v)) return -1;
    *out = v;
    return 0;
}

/* Raises the soft open-files limit to the hard one and fits max_conns under it. */
static void fit_conns(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)P.max_conns + 32 > rl.rlim_cur)
        P.max_conns = rl.rlim_cur > 64 ? (int)(rl.rlim_cur - 32) : 32;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: conveyor-test-provider --port N [--host 127.0.0.1] [--api-key K]\n"
            "       [--latency-ms M] [--jitter-ms J] [--error-rate R] [--error-status S]\n"
            "       [--rate-429 R] [--retry-after SEC] [--hang-rate R] [--seed N]\n"
            "       [--max-conns N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    double port = -1, seed = -1, max_conns = CONNS_MAX;
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int blen = sizeof(bound), rc;

    for (int i = 0; i < KN_COUNT; i++) P.knob[i] = KNOBS[i].def;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int k = 0, bad;
        while (k < KN_COUNT && !(KNOBS[k].flag && strcmp(KNOBS[k].flag, a) == 0)) k++;
        if (k < KN_COUNT)
            bad = parse_number(v, KNOBS[k].min, KNOBS[k].max, KNOBS[k].integer, &P.knob[k]);
        else if (!strcmp(a, "--port")) bad = parse_number(v, 0, 65535, 1, &port);
        else if (!strcmp(a, "--seed")) bad = parse_number(v, 0, 9007199254740991.0, 1, &seed);
        else if (!strcmp(a, "--max-conns")) bad = parse_number(v, 1, 1000000, 1, &max_conns);
        else if (!strcmp(a, "--host") && v) bad = 0, host = v;
        else if (!strcmp(a, "--api-key") && v && *v) bad = 0, P.api_key = v;
        else bad = -1;
        if (bad) return usage();
    }
    if (port < 0 || uv_ip4_addr(host, (int)port, &addr) != 0) return usage();
    P.rng = seed >= 0 ? (uint64_t)seed : uv_hrtime() ^ ((uint64_t)getpid() << 32);
    P.max_conns = (int)max_conns;
    fit_conns();
    signal(SIGPIPE, SIG_IGN);

    if ((rc = uv_loop_init(&P.loop)) != 0) goto fail;
    uv_tcp_init(&P.loop, &P.server);
    if ((rc = uv_tcp_bind(&P.server, (const struct sockaddr *)&addr, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&P.server, 4096, on_connection)) != 0 ||
        (rc = uv_tcp_getsockname(&P.server, (struct sockaddr *)&bound, &blen)) != 0)
        goto fail_server;
    uv_signal_init(&P.loop, &P.sigterm);
    uv_signal_init(&P.loop, &P.sigint);
    if ((rc = uv_signal_start(&P.sigterm, on_signal, SIGTERM)) != 0 ||
        (rc = uv_signal_start(&P.sigint, on_signal, SIGINT)) != 0)
        goto fail_signals;
    printf("listening on %s:%d\n", host, ntohs(((struct sockaddr_in *)&bound)->sin_port));
    fflush(stdout);

    uv_run(&P.loop, UV_RUN_DEFAULT);
    /* every handle was closed by on_signal; a failure here is a leak to fix */
    if ((rc = uv_loop_close(&P.loop)) != 0) {
        fprintf(stderr, "conveyor-test-provider: handles left open at exit: %s\n", uv_strerror(rc));
        return 1;
    }
    return 0;

fail_signals:
    uv_close((uv_handle_t *)&P.sigterm, NULL);
    uv_close((uv_handle_t *)&P.sigint, NULL);
fail_server:
    uv_close((uv_handle_t *)&P.server, NULL);
    uv_run(&P.loop, UV_RUN_DEFAULT);
    uv_loop_close(&P.loop);
fail:
    fprintf(stderr, "conveyor-test-provider: cannot listen on %s:%d: %s\n", host, (int)port,
            uv_strerror(rc));
    return 1;
}
