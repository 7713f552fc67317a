/* queue/queue.c — names, ids, backoff, scripts, argument vectors and reply parsers. */
#define _POSIX_C_SOURCE 200809L
#include "queue/queue.h"

#include <math.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/embed.h"
#include "common/util.h"
#include "queue/scripts.h"

extern const struct cm_embedded q_lua_scripts[];

static const char *const script_names[QS_COUNT] = {
    "archived", "cancel",   "enqueue", "fetch",   "finish", "heartbeat", "leader",
    "progress", "promote",  "reclaim", "release", "retry",  "sweep",
};
static cm_script_t scripts[QS_COUNT];
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_init(void)
{
    for (int i = 0; i < QS_COUNT; i++) cm_script_load(q_lua_scripts, script_names[i], &scripts[i]);
}

const char *q_script_src(enum q_script_id id)
{
    pthread_once(&scripts_once, scripts_init);
    return scripts[id].src;
}

const char *q_script_sha(enum q_script_id id)
{
    pthread_once(&scripts_once, scripts_init);
    return scripts[id].sha;
}

int q_script_by_sha(const char *sha, size_t len)
{
    pthread_once(&scripts_once, scripts_init);
    if (len != 40) return -1;
    for (int i = 0; i < QS_COUNT; i++)
        if (memcmp(scripts[i].sha, sha, 40) == 0) return i;
    return -1;
}

const char *q_strerror(int err)
{
    switch (err) {
    case Q_OK: return "ok";
    case Q_ENOTFOUND: return "no such job";
    case Q_EREDIS: return "redis unavailable or failed";
    case Q_ECORRUPT: return "corrupt job record";
    case Q_EINVAL: return "invalid argument";
    case Q_ENOMEM: return "out of memory";
    case Q_ECONFLICT: return "the job's state forbids it";
    default: return "unknown error";
    }
}

/* ---- names ---------------------------------------------------------------------- */

static int valid_name(const char *s, int allow_upper)
{
    size_t n = 0;
    if (!s) return 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                 c == '-' || (allow_upper && c >= 'A' && c <= 'Z');
        if (!ok || n >= Q_NAME_MAX) return 0;
    }
    return n > 0;
}

int q_valid_queue(const char *s) { return valid_name(s, 1); }
int q_valid_type(const char *s) { return valid_name(s, 0); }

int q_valid_id(const char *s)
{
    size_t pl = strlen(Q_ID_PREFIX);
    if (!s || strncmp(s, Q_ID_PREFIX, pl) != 0 || strlen(s) != pl + CM_ID_RAND_LEN) return 0;
    for (const char *p = s + pl; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
            return 0;
    return 1;
}

int q_new_id(char out[Q_ID_SIZE])
{
    return cm_random_id(out, Q_ID_SIZE, Q_ID_PREFIX, CM_ID_RAND_LEN) == 0 ? 0 : Q_EINVAL;
}

int q_status_terminal(const char *s)
{
    return s && (strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 ||
                 strcmp(s, "dead") == 0 || strcmp(s, "canceled") == 0);
}

int64_t q_backoff_ms(int attempt, double scale)
{
    uint32_t r = 0;
    if (attempt < 1) attempt = 1;
    if (attempt > 1000) attempt = 1000;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    double a = attempt;
    double s = a * a * a * a + 15.0 + (double)(r % (uint32_t)(10 * (attempt + 1)));
    double ms = s * 1000.0 * scale;
    if (ms > 9e15) ms = 9e15;
    return (int64_t)llround(ms);
}

void q_key_job(char *out, size_t outlen, const char *prefix, const char *id)
{
    snprintf(out, outlen, "%sjob:%s", prefix, id);
}

void q_channel_done(const char *prefix, char *out, size_t outlen)
{
    snprintf(out, outlen, "%sch:done", prefix);
}

void q_channel_cancel(const char *prefix, char *out, size_t outlen)
{
    snprintf(out, outlen, "%sch:cancel", prefix);
}

/* ---- argument vectors ----------------------------------------------------------- */

void q_argv_free(q_argv_t *a)
{
    if (!a) return;
    for (int i = 0; i < a->argc; i++) free(a->argv[i]);
    free(a->argv);
    free(a->len);
    free(a);
}

q_argv_t *q_argv_new(int cap)
{
    q_argv_t *a = calloc(1, sizeof(*a));
    if (!a) return NULL;
    a->argv = calloc((size_t)cap, sizeof(char *));
    a->len = calloc((size_t)cap, sizeof(size_t));
    if (!a->argv || !a->len) {
        q_argv_free(a);
        return NULL;
    }
    a->cap = cap;
    return a;
}

int q_argv_add(q_argv_t *a, const char *s, size_t len)
{
    if (a->argc == a->cap) {
        int cap = a->cap * 2;
        char **v = realloc(a->argv, (size_t)cap * sizeof(char *));
        if (!v) return -1;
        a->argv = v;
        size_t *l = realloc(a->len, (size_t)cap * sizeof(size_t));
        if (!l) return -1;
        a->len = l;
        a->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, s, len);
    c[len] = '\0';
    a->argv[a->argc] = c;
    a->len[a->argc++] = len;
    return 0;
}

static int argv_str(q_argv_t *a, const char *s) { return q_argv_add(a, s, strlen(s)); }

static int argv_fmt(q_argv_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int argv_fmt(q_argv_t *a, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf)) return -1;
    return q_argv_add(a, buf, (size_t)n);
}

q_argv_t *q_argv_script(enum q_script_id id, int nkeys, int cap)
{
    q_argv_t *a = q_argv_new(cap < 8 ? 8 : cap);
    if (!a) return NULL;
    if (argv_str(a, "EVALSHA") || argv_str(a, q_script_sha(id)) || argv_fmt(a, "%d", nkeys)) {
        q_argv_free(a);
        return NULL;
    }
    return a;
}

int q_argv_to_eval(q_argv_t *a)
{
    if (!a || a->argc < 3 || strcmp(a->argv[0], "EVALSHA") != 0) return Q_EINVAL;
    int id = q_script_by_sha(a->argv[1], a->len[1]);
    if (id < 0) return Q_EINVAL;
    const char *src = q_script_src((enum q_script_id)id);
    size_t sl = strlen(src);
    char *verb = strdup("EVAL"), *body = malloc(sl + 1);
    if (!verb || !body) {
        free(verb);
        free(body);
        return Q_ENOMEM;
    }
    memcpy(body, src, sl + 1);
    free(a->argv[0]);
    free(a->argv[1]);
    a->argv[0] = verb;
    a->len[0] = 4;
    a->argv[1] = body;
    a->len[1] = sl;
    return 0;
}

int q_reply_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Key helpers: "<prefix>{<queue>}:<what>" and "<prefix><what>". */
static int argv_qkey(q_argv_t *a, const char *prefix, const char *queue, const char *what)
{
    return argv_fmt(a, "%s{%s}:%s", prefix, queue, what);
}

#define ADD(expr)                                                                        \
    do {                                                                                 \
        if ((expr) != 0) goto fail;                                                      \
    } while (0)

q_argv_t *q_cmd_fetch(const char *prefix, const char *queue, int n, int lease_ms,
                      const char *worker_id)
{
    q_argv_t *a = q_argv_script(QS_FETCH, 5, 16);
    if (!a) return NULL;
    ADD(argv_qkey(a, prefix, queue, "ready"));
    ADD(argv_qkey(a, prefix, queue, "working"));
    ADD(argv_qkey(a, prefix, queue, "marker"));
    ADD(argv_qkey(a, prefix, queue, "dead"));
    ADD(argv_fmt(a, "%sdone", prefix));
    ADD(argv_str(a, prefix));
    ADD(argv_fmt(a, "%d", n));
    ADD(argv_fmt(a, "%d", lease_ms));
    ADD(argv_str(a, worker_id));
    ADD(argv_str(a, queue));
    return a;
fail:
    q_argv_free(a);
    return NULL;
}

/* The vector of a finish: 5 keys, prefix, channel, then one group of 5 per job. */
#define FINISH_HEAD (3 + 5 + 2)
#define FINISH_GROUP 5

q_argv_t *q_cmd_finish(const char *prefix, const char *queue, const char *id, long long token,
                       const char *outcome, const char *payload, int64_t delay_ms)
{
    char chan[256];
    q_argv_t *a = q_argv_script(QS_FINISH, 5, FINISH_HEAD + FINISH_GROUP);
    if (!a) return NULL;
    q_channel_done(prefix, chan, sizeof(chan));
    ADD(argv_qkey(a, prefix, queue, "working"));
    ADD(argv_qkey(a, prefix, queue, "scheduled"));
    ADD(argv_qkey(a, prefix, queue, "dead"));
    ADD(argv_fmt(a, "%sdone", prefix));
    ADD(argv_qkey(a, prefix, queue, "stats"));
    ADD(argv_str(a, prefix));
    ADD(argv_str(a, chan));
    ADD(argv_str(a, id));
    ADD(argv_fmt(a, "%lld", token));
    ADD(argv_str(a, outcome));
    ADD(argv_str(a, payload ? payload : "{}"));
    ADD(argv_fmt(a, "%lld", (long long)delay_ms));
    return a;
fail:
    q_argv_free(a);
    return NULL;
}

/* 1 if a is a one-job finish vector (EVALSHA or EVAL form) for the queue of first. */
static int finish_mergeable(const q_argv_t *a, const q_argv_t *first)
{
    return a->argc == FINISH_HEAD + FINISH_GROUP && strcmp(a->argv[0], "EVALSHA") == 0 &&
           strcmp(a->argv[1], q_script_sha(QS_FINISH)) == 0 &&
           strcmp(a->argv[3], first->argv[3]) == 0; /* same working set: same queue */
}

int q_cmd_finish_merge(q_argv_t *const *cmds, int n, q_argv_t **out)
{
    int k = 0;
    *out = NULL;
    while (k < n && finish_mergeable(cmds[k], cmds[0])) k++;
    if (k < 2) return k;
    q_argv_t *a = q_argv_new(FINISH_HEAD + FINISH_GROUP * k);
    if (!a) return 1;
    for (int j = 0; j < FINISH_HEAD; j++) ADD(q_argv_add(a, cmds[0]->argv[j], cmds[0]->len[j]));
    for (int i = 0; i < k; i++)
        for (int j = FINISH_HEAD; j < FINISH_HEAD + FINISH_GROUP; j++)
            ADD(q_argv_add(a, cmds[i]->argv[j], cmds[i]->len[j]));
    *out = a;
    return k;
fail:
    q_argv_free(a);
    return 1;
}

const char *q_finish_status(const redisReply *r, int i)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || i < 0 || (size_t)i >= r->elements ||
        r->element[i]->type != REDIS_REPLY_STRING)
        return NULL;
    return r->element[i]->str;
}

q_argv_t *q_cmd_progress(const char *prefix, const char *id, long long token, int percent,
                         const char *message)
{
    q_argv_t *a = q_argv_script(QS_PROGRESS, 1, 8);
    if (!a) return NULL;
    if (percent < 0) percent = 0;
    if (percent > 100) percent = 100;
    ADD(argv_fmt(a, "%sjob:%s", prefix, id));
    ADD(argv_fmt(a, "%lld", token));
    ADD(argv_fmt(a, "%d", percent));
    ADD(argv_str(a, message ? message : ""));
    return a;
fail:
    q_argv_free(a);
    return NULL;
}

q_argv_t *q_cmd_heartbeat(const char *prefix, const char *queue, int lease_ms, int n,
                          const char *const *ids, const long long *tokens)
{
    q_argv_t *a = q_argv_script(QS_HEARTBEAT, 1, 8 + 2 * n);
    if (!a) return NULL;
    ADD(argv_qkey(a, prefix, queue, "working"));
    ADD(argv_str(a, prefix));
    ADD(argv_fmt(a, "%d", lease_ms));
    for (int i = 0; i < n; i++) {
        ADD(argv_str(a, ids[i]));
        ADD(argv_fmt(a, "%lld", tokens[i]));
    }
    return a;
fail:
    q_argv_free(a);
    return NULL;
}

q_argv_t *q_cmd_release(const char *prefix, const char *queue, const char *id,
                        long long token)
{
    char chan[256];
    q_argv_t *a = q_argv_script(QS_RELEASE, 6, 12);
    if (!a) return NULL;
    q_channel_done(prefix, chan, sizeof(chan));
    ADD(argv_fmt(a, "%sjob:%s", prefix, id));
    ADD(argv_qkey(a, prefix, queue, "working"));
    ADD(argv_qkey(a, prefix, queue, "ready"));
    ADD(argv_qkey(a, prefix, queue, "marker"));
    ADD(argv_fmt(a, "%sdone", prefix));
    ADD(argv_qkey(a, prefix, queue, "stats"));
    ADD(argv_str(a, id));
    ADD(argv_fmt(a, "%lld", token));
    ADD(argv_str(a, chan));
    return a;
fail:
    q_argv_free(a);
    return NULL;
}

q_argv_t *q_cmd_wait(const char *prefix, const char *const *queues, int nqueues,
                     double timeout_s)
{
    q_argv_t *a = q_argv_new(nqueues + 2);
    if (!a) return NULL;
    ADD(argv_str(a, "BZPOPMIN"));
    for (int i = 0; i < nqueues; i++) ADD(argv_qkey(a, prefix, queues[i], "marker"));
    ADD(argv_fmt(a, "%.3f", timeout_s));
    return a;
fail:
    q_argv_free(a);
    return NULL;
}

/* ---- reply parsers -------------------------------------------------------------- */

void q_fetched_free(q_fetched_t *f, int n)
{
    if (!f) return;
    for (int i = 0; i < n; i++) free(f[i].rec);
    free(f);
}

int q_parse_fetch(const redisReply *r, q_fetched_t **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY) return Q_EREDIS;
    if (r->elements == 0) return 0;
    q_fetched_t *f = calloc(r->elements, sizeof(*f));
    if (!f) return Q_ENOMEM;
    int k = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 4 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[0]->len >= Q_ID_SIZE ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_INTEGER ||
            e->element[3]->type != REDIS_REPLY_STRING)
            continue; /* cannot happen with our script; never trust it blindly */
        memcpy(f[k].id, e->element[0]->str, e->element[0]->len);
        f[k].id[e->element[0]->len] = '\0';
        f[k].token = e->element[1]->integer;
        f[k].attempt = (int)e->element[2]->integer;
        f[k].reclen = e->element[3]->len;
        f[k].rec = malloc(f[k].reclen + 1);
        if (!f[k].rec) {
            q_fetched_free(f, k);
            return Q_ENOMEM;
        }
        memcpy(f[k].rec, e->element[3]->str, f[k].reclen);
        f[k].rec[f[k].reclen] = '\0';
        k++;
    }
    *out = f;
    *n = k;
    return 0;
}

int q_parse_heartbeat(const redisReply *r, void (*on_lost)(void *, const char *),
                      void (*on_cancel)(void *, const char *), void *ctx)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) return Q_EREDIS;
    for (int part = 0; part < 2; part++) {
        const redisReply *l = r->element[part];
        if (l->type != REDIS_REPLY_ARRAY) return Q_EREDIS;
        for (size_t i = 0; i < l->elements; i++) {
            if (l->element[i]->type != REDIS_REPLY_STRING) continue;
            if (part == 0 && on_lost) on_lost(ctx, l->element[i]->str);
            if (part == 1 && on_cancel) on_cancel(ctx, l->element[i]->str);
        }
    }
    return 0;
}
