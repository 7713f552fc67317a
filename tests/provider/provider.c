/* tests/provider/provider.c — an OpenAI-compatible chat completions server for tests and
 * `make run`: deterministic replies, honest token counts, and knobs for latency, errors,
 * 429 bursts and hangs. One libuv loop; HTTP/1.1 with keep-alive; bodies by
 * Content-Length only.
 *
 *   conveyor-test-provider --port N [--host H] [--api-key K] [--latency-ms M]
 *       [--jitter-ms J] [--error-rate R] [--error-status S] [--rate-429 R]
 *       [--retry-after SEC] [--hang-rate R] [--seed N]
 *
 * Prints "listening on H:PORT" when ready (port 0: a free one). The last user message
 * may carry markers for one request: [[status:NNN]], [[hang]], [[delay:MS]].
 * POST /_control {latencyMs, jitterMs, errorRate, errorStatus, rate429, retryAfter,
 * hangRate, failNext, failStatus} changes the knobs; GET /_stats; POST /_reset. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#define BODY_MAX (4u << 20)
#define HEAD_MAX 16384
#define ARRIVALS_MAX 10000
#define CONNS_MAX 20000

static struct {
    const char *api_key;
    double latency_ms, jitter_ms, error_rate, rate_429, hang_rate;
    int error_status, retry_after, fail_next, fail_status;
    /* stats */
    long long requests, counter;
    int in_flight, max_in_flight, conns;
    long long by_status[600];
    double arrivals[ARRIVALS_MAX];
    int narrivals;
    uv_loop_t *loop;
    uv_tcp_t server;
    uv_signal_t sigterm, sigint;
} P = {.error_status = 500, .retry_after = 1, .fail_status = 500};

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    char *buf;
    size_t len, cap;
    int busy;     /* a request is being answered (latency timer or hang) */
    int closing, handles;
    int status;   /* the pending answer */
    char *reply;  /* its body */
    char *extra;  /* extra header lines */
    int keep;     /* keep-alive */
    size_t used;  /* bytes of buf the pending request took */
} conn_t;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double rnd(void) { return (double)rand() / ((double)RAND_MAX + 1.0); }

static void on_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles > 0) return;
    free(c->buf);
    free(c->reply);
    free(c->extra);
    free(c);
    P.conns--;
}

static void conn_close(conn_t *c)
{
    if (c->closing) return;
    c->closing = 1;
    if (c->busy) P.in_flight--;
    c->busy = 0;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

typedef struct {
    uv_write_t req;
    char *data;
    conn_t *c;
    int close_after;
} wreq_t;

static void on_written(uv_write_t *w, int status)
{
    wreq_t *r = (wreq_t *)w;
    if ((status < 0 || r->close_after) && !r->c->closing) conn_close(r->c);
    free(r->data);
    free(r);
}

static const char *reason(int s)
{
    switch (s) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static void process(conn_t *c);

/* Writes status + body (taken) and goes on with the connection. */
static void send_response(conn_t *c, int status, char *body, const char *extra, int keep)
{
    size_t bl = body ? strlen(body) : 0;
    wreq_t *w = calloc(1, sizeof(*w));
    int n;
    if (!w || !(w->data = malloc(bl + 512 + (extra ? strlen(extra) : 0)))) {
        free(w);
        free(body);
        conn_close(c);
        return;
    }
    n = sprintf(w->data,
                "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                "%s%s\r\n",
                status, reason(status), bl, extra ? extra : "",
                keep ? "" : "Connection: close\r\n");
    if (body) memcpy(w->data + n, body, bl);
    free(body);
    w->c = c;
    w->close_after = !keep;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)(n + (int)bl));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(w->data);
        free(w);
        conn_close(c);
        return;
    }
    if (keep) process(c); /* a pipelined request may wait in the buffer */
}

static char *openai_error(const char *msg, const char *type, const char *param)
{
    json_t *j = json_pack("{s:{s:s,s:s,s:s?,s:n}}", "error", "message", msg, "type", type,
                          "param", param, "code");
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static int words(const char *s)
{
    int n = 0, in = 0;
    for (; *s; s++) {
        int sp = *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r';
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}

/* Text of a message's content (string or text parts), into a new string. */
static char *content_text(const json_t *content)
{
    if (json_is_string(content)) return strdup(json_string_value(content));
    size_t i, len = 0;
    json_t *p;
    json_array_foreach(content, i, p) len += strlen(json_string_value(json_object_get(p, "text")) ?: "") + 1;
    char *s = calloc(1, len + 1);
    if (!s) return NULL;
    json_array_foreach(content, i, p) {
        strcat(s, json_string_value(json_object_get(p, "text")) ?: "");
        strcat(s, " ");
    }
    return s;
}

static void on_latency(uv_timer_t *t)
{
    conn_t *c = t->data;
    c->busy = 0;
    P.in_flight--;
    if (c->status >= 0 && c->status < 600) P.by_status[c->status]++; /* chat answers only */
    char *body = c->reply, *extra = c->extra;
    c->reply = c->extra = NULL;
    send_response(c, c->status, body, extra, c->keep);
    free(extra);
}

/* Answers after ms (hang: never). */
static void answer_later(conn_t *c, int status, char *body, const char *extra, double ms,
                         int hang)
{
    c->busy = 1;
    P.in_flight++;
    if (P.in_flight > P.max_in_flight) P.max_in_flight = P.in_flight;
    c->status = status;
    c->reply = body;
    c->extra = extra ? strdup(extra) : NULL;
    if (hang) return;
    uv_timer_start(&c->timer, on_latency, ms > 0 ? (uint64_t)ms : 0, 0);
}

static void chat(conn_t *c, const char *auth, const char *body, size_t blen)
{
    json_error_t e;
    json_t *req = json_loadb(body, blen, 0, &e), *msgs, *m;
    const char *model, *param = NULL, *why = NULL;
    char *last = NULL, extra[64] = "";
    int prompt = 0, status = 200, hang = 0;
    double delay = P.latency_ms + (P.jitter_ms > 0 ? rnd() * P.jitter_ms : 0);
    size_t i;

    P.requests++;
    if (P.narrivals < ARRIVALS_MAX) P.arrivals[P.narrivals++] = now_ms();
    if (P.api_key) {
        char want[512];
        snprintf(want, sizeof(want), "Bearer %s", P.api_key);
        if (!auth || strcmp(auth, want) != 0) {
            json_decref(req);
            answer_later(c, 401, openai_error("Incorrect API key provided", "invalid_request_error", NULL), NULL, 0, 0);
            return;
        }
    }
    if (!json_is_object(req)) why = "the body must be a JSON object";
    else if (!(model = json_string_value(json_object_get(req, "model"))) || !*model)
        why = "model is required", param = "model";
    else if (!json_is_array(msgs = json_object_get(req, "messages")) || json_array_size(msgs) == 0)
        why = "messages must be a non-empty array", param = "messages";
    else if (json_is_true(json_object_get(req, "stream")))
        why = "stream is not supported by this provider", param = "stream";
    if (!why) {
        json_array_foreach(msgs, i, m) {
            const char *role = json_string_value(json_object_get(m, "role"));
            json_t *ct = json_object_get(m, "content");
            if (!role || (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") &&
                          strcmp(role, "tool") && strcmp(role, "developer"))) {
                why = "invalid role", param = "messages";
                break;
            }
            if (!json_is_string(ct) && !json_is_array(ct)) {
                why = "content must be a string", param = "messages";
                break;
            }
            char *t = content_text(ct);
            prompt += (t ? words(t) : 0) + 3;
            if (strcmp(role, "user") == 0) {
                free(last);
                last = t;
            } else {
                free(t);
            }
        }
    }
    if (why) {
        free(last);
        json_decref(req);
        answer_later(c, 400, openai_error(why, "invalid_request_error", param), NULL, 0, 0);
        return;
    }
    if (!last) last = strdup("");
    /* knobs, then the markers of this request */
    if (P.fail_next > 0) {
        P.fail_next--;
        status = P.fail_status;
    } else if (P.hang_rate > 0 && rnd() < P.hang_rate) {
        hang = 1;
    } else if (P.rate_429 > 0 && rnd() < P.rate_429) {
        status = 429;
    } else if (P.error_rate > 0 && rnd() < P.error_rate) {
        status = P.error_status;
    }
    const char *mk;
    if ((mk = strstr(last, "[[status:"))) status = atoi(mk + 9);
    if (strstr(last, "[[hang]]")) hang = 1;
    if ((mk = strstr(last, "[[delay:"))) delay = atof(mk + 8);
    if (status == 429) snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", P.retry_after);
    if (status != 200) {
        char msg[64];
        snprintf(msg, sizeof(msg), "injected status %d", status);
        free(last);
        json_decref(req);
        answer_later(c, status, openai_error(msg, status == 429 ? "rate_limit_error" : "server_error", NULL),
                     extra, delay, hang);
        return;
    }
    /* "Echo: " + the last user message, cut to max_tokens words */
    json_int_t max = json_integer_value(json_object_get(req, "max_tokens"));
    if (!max) max = json_integer_value(json_object_get(req, "max_completion_tokens"));
    size_t rl = strlen(last) + 8;
    char *reply = malloc(rl), *cut;
    snprintf(reply, rl, "Echo: %s", last);
    int completion = words(reply);
    const char *finish = "stop";
    if (max > 0 && completion > max) {
        int n = 0, in = 0;
        for (cut = reply; *cut; cut++) {
            int sp = *cut == ' ' || *cut == '\t' || *cut == '\n' || *cut == '\r';
            if (!sp && !in && ++n > max) break;
            in = !sp;
        }
        while (cut > reply && (cut[-1] == ' ' || cut[-1] == '\t' || cut[-1] == '\n')) cut--;
        *cut = '\0';
        completion = (int)max;
        finish = "length";
    }
    char id[40];
    snprintf(id, sizeof(id), "chatcmpl-%lld", ++P.counter);
    json_t *out = json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:{s:s,s:s},s:s}],s:{s:i,s:i,s:i}}", "id", id,
                            "object", "chat.completion", "created", (json_int_t)time(NULL), "model",
                            model, "choices", "index", 0, "message", "role", "assistant",
                            "content", reply, "finish_reason", finish, "usage", "prompt_tokens",
                            prompt, "completion_tokens", completion, "total_tokens",
                            prompt + completion);
    char *text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    free(reply);
    free(last);
    json_decref(req);
    answer_later(c, 200, text, NULL, delay, hang);
}

static void set_num(json_t *j, const char *k, double *d)
{
    json_t *v = json_object_get(j, k);
    if (json_is_number(v)) *d = json_number_value(v);
}

static void set_int(json_t *j, const char *k, int *d)
{
    json_t *v = json_object_get(j, k);
    if (json_is_number(v)) *d = (int)json_number_value(v);
}

static char *settings(void)
{
    json_t *j = json_pack("{s:f,s:f,s:f,s:i,s:f,s:i,s:f,s:i,s:i}", "latencyMs", P.latency_ms,
                          "jitterMs", P.jitter_ms, "errorRate", P.error_rate, "errorStatus",
                          P.error_status, "rate429", P.rate_429, "retryAfter", P.retry_after,
                          "hangRate", P.hang_rate, "failNext", P.fail_next, "failStatus",
                          P.fail_status);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static char *stats(void)
{
    json_t *by = json_object(), *arr = json_array();
    for (int s = 0; s < 600; s++) {
        if (!P.by_status[s]) continue;
        char k[16];
        snprintf(k, sizeof(k), "%d", s);
        json_object_set_new(by, k, json_integer(P.by_status[s]));
    }
    for (int i = 0; i < P.narrivals; i++) json_array_append_new(arr, json_real(P.arrivals[i]));
    json_t *j = json_pack("{s:I,s:i,s:i,s:o,s:o}", "requests", (json_int_t)P.requests, "inFlight",
                          P.in_flight, "maxInFlight", P.max_in_flight, "byStatus", by, "arrivals", arr);
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(j);
    return s;
}

/* The value of header name in head (lines after the request line), copied into out. */
static int header(const char *head, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1, *end = strstr(v, "\r\n");
            while (*v == ' ') v++;
            size_t len = end ? (size_t)(end - v) : strlen(v);
            if (len >= n) len = n - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return 1;
        }
    }
    return 0;
}

/* Handles every complete request in the buffer, one at a time. */
static void process(conn_t *c)
{
    while (!c->busy && !c->closing) {
        char *end = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (!end) {
            if (c->len > HEAD_MAX) send_response(c, 431, openai_error("headers too large", "invalid_request_error", NULL), NULL, 0);
            return;
        }
        size_t hl = (size_t)(end - c->buf) + 4;
        char *head = malloc(hl + 1), method[16], path[256], ver[16], v[512];
        long long cl = 0;
        if (!head) return;
        memcpy(head, c->buf, hl);
        head[hl] = '\0';
        if (sscanf(head, "%15s %255s %15s", method, path, ver) != 3 || strncmp(ver, "HTTP/1.", 7) != 0) {
            free(head);
            send_response(c, 400, openai_error("malformed request", "invalid_request_error", NULL), NULL, 0);
            return;
        }
        if (header(head, "Content-Length", v, sizeof(v))) cl = atoll(v);
        if (cl < 0 || cl > (long long)BODY_MAX) {
            free(head);
            send_response(c, 413, openai_error("body too large", "invalid_request_error", NULL), NULL, 0);
            return;
        }
        if (c->len < hl + (size_t)cl) { /* the body is not all here yet */
            free(head);
            return;
        }
        int keep = strcmp(ver, "HTTP/1.1") == 0;
        if (header(head, "Connection", v, sizeof(v))) keep = strcasecmp(v, "close") != 0;
        char *body = c->buf + hl;
        char auth[600] = "";
        int has_auth = header(head, "Authorization", auth, sizeof(auth));
        c->keep = keep;
        /* the request leaves the buffer before it is answered */
        char *copy = malloc((size_t)cl + 1);
        memcpy(copy, body, (size_t)cl);
        copy[cl] = '\0';
        memmove(c->buf, c->buf + hl + cl, c->len - hl - (size_t)cl);
        c->len -= hl + (size_t)cl;
        if (strcmp(method, "POST") == 0 && strcmp(path, "/v1/chat/completions") == 0) {
            chat(c, has_auth ? auth : NULL, copy, (size_t)cl);
        } else if (strcmp(method, "POST") == 0 && strcmp(path, "/_control") == 0) {
            json_t *j = json_loadb(copy, (size_t)cl, 0, NULL);
            set_num(j, "latencyMs", &P.latency_ms);
            set_num(j, "jitterMs", &P.jitter_ms);
            set_num(j, "errorRate", &P.error_rate);
            set_int(j, "errorStatus", &P.error_status);
            set_num(j, "rate429", &P.rate_429);
            set_int(j, "retryAfter", &P.retry_after);
            set_num(j, "hangRate", &P.hang_rate);
            set_int(j, "failNext", &P.fail_next);
            set_int(j, "failStatus", &P.fail_status);
            json_decref(j);
            send_response(c, 200, settings(), NULL, keep);
        } else if (strcmp(method, "GET") == 0 && strcmp(path, "/_stats") == 0) {
            send_response(c, 200, stats(), NULL, keep);
        } else if (strcmp(method, "POST") == 0 && strcmp(path, "/_reset") == 0) {
            P.requests = 0;
            P.max_in_flight = P.in_flight;
            P.narrivals = 0;
            memset(P.by_status, 0, sizeof(P.by_status));
            send_response(c, 200, strdup("{}"), NULL, keep);
        } else if (strcmp(method, "GET") == 0 && strcmp(path, "/v1/models") == 0) {
            send_response(c, 200, strdup("{\"object\":\"list\",\"data\":[{\"id\":\"test-echo\","
                                         "\"object\":\"model\",\"created\":0,\"owned_by\":\"test\"}]}"),
                          NULL, keep);
        } else {
            send_response(c, 404, openai_error("no such endpoint", "invalid_request_error", NULL), NULL, keep);
        }
        free(copy);
        free(head);
        return; /* send_response went on with the buffer (or the answer is pending) */
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    conn_t *c = h->data;
    (void)suggested;
    if (c->cap - c->len < 65536) {
        size_t cap = c->cap ? c->cap * 2 : 131072;
        char *n = realloc(c->buf, cap);
        if (!n) {
            *b = uv_buf_init(NULL, 0);
            return;
        }
        c->buf = n;
        c->cap = cap;
    }
    *b = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    conn_t *c = s->data;
    (void)b;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->len += (size_t)n;
    if (c->len > BODY_MAX + HEAD_MAX + 65536 && !c->busy) {
        send_response(c, 413, openai_error("body too large", "invalid_request_error", NULL), NULL, 0);
        return;
    }
    process(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    conn_t *c;
    if (status < 0 || P.conns >= CONNS_MAX || !(c = calloc(1, sizeof(*c)))) return;
    uv_tcp_init(P.loop, &c->tcp);
    uv_timer_init(P.loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    P.conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        if (h->type == UV_TCP && h != (uv_handle_t *)&P.server && h->data)
            conn_close(h->data);
        else if (!uv_is_closing(h) && (h->type != UV_TIMER || !h->data))
            uv_close(h, NULL);
    }
}

static void on_signal(uv_signal_t *s, int sig)
{
    (void)s;
    (void)sig;
    uv_walk(P.loop, close_walk, NULL);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = -1;
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int blen = sizeof(bound);

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--api-key")) P.api_key = v;
        else if (!strcmp(a, "--latency-ms")) P.latency_ms = atof(v);
        else if (!strcmp(a, "--jitter-ms")) P.jitter_ms = atof(v);
        else if (!strcmp(a, "--error-rate")) P.error_rate = atof(v);
        else if (!strcmp(a, "--error-status")) P.error_status = atoi(v);
        else if (!strcmp(a, "--rate-429")) P.rate_429 = atof(v);
        else if (!strcmp(a, "--retry-after")) P.retry_after = atoi(v);
        else if (!strcmp(a, "--hang-rate")) P.hang_rate = atof(v);
        else if (!strcmp(a, "--seed")) srand((unsigned)atoi(v));
        else goto usage;
        i++;
    }
    if (port < 0 || port > 65535) goto usage;
    signal(SIGPIPE, SIG_IGN);
    P.loop = uv_default_loop();
    uv_tcp_init(P.loop, &P.server);
    if (uv_ip4_addr(host, port, &addr) != 0 ||
        uv_tcp_bind(&P.server, (const struct sockaddr *)&addr, 0) != 0 ||
        uv_listen((uv_stream_t *)&P.server, 1024, on_connection) != 0 ||
        uv_tcp_getsockname(&P.server, (struct sockaddr *)&bound, &blen) != 0) {
        fprintf(stderr, "conveyor-test-provider: cannot listen on %s:%d\n", host, port);
        return 1;
    }
    uv_signal_init(P.loop, &P.sigterm);
    uv_signal_init(P.loop, &P.sigint);
    uv_signal_start(&P.sigterm, on_signal, SIGTERM);
    uv_signal_start(&P.sigint, on_signal, SIGINT);
    printf("listening on %s:%d\n", host, ntohs(((struct sockaddr_in *)&bound)->sin_port));
    fflush(stdout);
    uv_run(P.loop, UV_RUN_DEFAULT);
    uv_loop_close(P.loop);
    return 0;
usage:
    fprintf(stderr, "usage: conveyor-test-provider --port N [--host H] [--api-key K] "
                    "[--latency-ms M] [--jitter-ms J] [--error-rate R] [--error-status S] "
                    "[--rate-429 R] [--retry-after SEC] [--hang-rate R] [--seed N]\n");
    return 2;
}
