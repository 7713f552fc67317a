/* queue/codec.c — the msgpack job record, and job snapshots as JSON. */
#define _POSIX_C_SOURCE 200809L
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "queue/queue.h"

#define MAX_DEPTH 16

/* ---- encode --------------------------------------------------------------------- */

/* The pack_* helpers return 0, or non-zero once a write failed (out of memory): the
 * buffer then holds a cut record, which must not be stored. */
static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    return pack_str(pk, k) || pack_str(pk, v);
}

static int pack_kv_int(msgpack_packer *pk, const char *k, int v)
{
    return pack_str(pk, k) || msgpack_pack_int(pk, v);
}

int q_record_encode(const q_record_t *rec, char **out, size_t *outlen)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int bad;

    *out = NULL;
    *outlen = 0;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bad = msgpack_pack_map(&pk, rec->idempotency_key ? 9 : 8) ||
          pack_kv_str(&pk, "id", rec->id) || pack_kv_str(&pk, "type", rec->type) ||
          pack_kv_str(&pk, "queue", rec->queue) || pack_kv_str(&pk, "owner", rec->owner) ||
          pack_kv_str(&pk, "input", rec->input ? rec->input : "{}") ||
          pack_kv_int(&pk, "max_attempts", rec->max_attempts) ||
          pack_kv_int(&pk, "priority", rec->priority) ||
          pack_kv_int(&pk, "timeout_ms", rec->timeout_ms) ||
          (rec->idempotency_key && pack_kv_str(&pk, "idem", rec->idempotency_key));
    if (bad || !sb.data) { /* msgpack_sbuffer_write failed to allocate */
        msgpack_sbuffer_destroy(&sb);
        return Q_ENOMEM;
    }
    *out = sb.data;
    *outlen = sb.size;
    return 0;
}

/* ---- validate: check every declared size against the bytes left ----------------- */

static int be(const unsigned char *p, int n, uint64_t *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) *v = (*v << 8) | p[i];
    return 0;
}

/* Walks one object at buf[*off]; returns 0 or -1. Never allocates. */
static int walk(const unsigned char *b, size_t len, size_t *off, int depth)
{
    uint64_t n = 0, skip = 0, items = 0;
    if (depth > MAX_DEPTH || *off >= len) return -1;
    unsigned char t = b[(*off)++];
    size_t left = len - *off;

#define NEED(k)                                                                          \
    do {                                                                                 \
        if (left < (size_t)(k)) return -1;                                               \
    } while (0)

    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return 0;
    if ((t & 0xe0) == 0xa0) skip = t & 0x1f;                     /* fixstr */
    else if ((t & 0xf0) == 0x90) items = t & 0x0f;               /* fixarray */
    else if ((t & 0xf0) == 0x80) items = 2 * (uint64_t)(t & 0x0f); /* fixmap */
    else switch (t) {
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xca: case 0xce: case 0xd2: skip = 4; break;
        case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
        case 0xd4: skip = 2; break; /* fixext: type + data */
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xc4: case 0xd9: NEED(1); be(b + *off, 1, &n); *off += 1; skip = n; break;
        case 0xc5: case 0xda: NEED(2); be(b + *off, 2, &n); *off += 2; skip = n; break;
        case 0xc6: case 0xdb: NEED(4); be(b + *off, 4, &n); *off += 4; skip = n; break;
        case 0xc7: NEED(1); be(b + *off, 1, &n); *off += 1; skip = n + 1; break;
        case 0xc8: NEED(2); be(b + *off, 2, &n); *off += 2; skip = n + 1; break;
        case 0xc9: NEED(4); be(b + *off, 4, &n); *off += 4; skip = n + 1; break;
        case 0xdc: NEED(2); be(b + *off, 2, &items); *off += 2; break;
        case 0xdd: NEED(4); be(b + *off, 4, &items); *off += 4; break;
        case 0xde: NEED(2); be(b + *off, 2, &n); *off += 2; items = 2 * n; break;
        case 0xdf: NEED(4); be(b + *off, 4, &n); *off += 4; items = 2 * n; break;
        default: return -1; /* 0xc1: never used */
        }
#undef NEED
    left = len - *off;
    if (skip > left || items > left) return -1; /* each item takes at least one byte */
    *off += (size_t)skip;
    for (uint64_t i = 0; i < items; i++)
        if (walk(b, len, off, depth + 1) != 0) return -1;
    return 0;
}

/* ---- decode --------------------------------------------------------------------- */

void q_record_clear(q_record_t *rec)
{
    free(rec->id);
    free(rec->type);
    free(rec->queue);
    free(rec->owner);
    free(rec->input);
    free(rec->idempotency_key);
    memset(rec, 0, sizeof(*rec));
}

static char *obj_strdup(const msgpack_object *o)
{
    char *s = malloc(o->via.str.size + 1);
    if (!s) return NULL;
    memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = '\0';
    if (memchr(s, '\0', o->via.str.size)) { /* an embedded NUL would truncate silently */
        free(s);
        return NULL;
    }
    return s;
}

int q_record_decode(const char *buf, size_t len, q_record_t *rec, char *why, size_t whylen)
{
    msgpack_unpacked u;
    size_t off = 0;
    int rc = Q_ECORRUPT;
    struct {
        const char *key;
        char **str;
        int *num;
        int required;
    } fields[] = {
        {"id", &rec->id, NULL, 1},           {"type", &rec->type, NULL, 1},
        {"queue", &rec->queue, NULL, 1},     {"owner", &rec->owner, NULL, 1},
        {"input", &rec->input, NULL, 1},     {"idem", &rec->idempotency_key, NULL, 0},
        {"max_attempts", NULL, &rec->max_attempts, 1},
        {"priority", NULL, &rec->priority, 1}, {"timeout_ms", NULL, &rec->timeout_ms, 0},
    };
    const size_t nfields = sizeof(fields) / sizeof(fields[0]);
    int seen[sizeof(fields) / sizeof(fields[0])] = {0};

    memset(rec, 0, sizeof(*rec));
    if (len == 0 || len > Q_MAX_RECORD) {
        snprintf(why, whylen, "record size %zu out of bounds", len);
        return Q_ECORRUPT;
    }
    if (walk((const unsigned char *)buf, len, &off, 0) != 0 || off != len) {
        snprintf(why, whylen, "record is not well-formed msgpack");
        return Q_ECORRUPT;
    }
    msgpack_unpacked_init(&u);
    off = 0;
    if (msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        snprintf(why, whylen, "record is not a msgpack map");
        goto out;
    }
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        const msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR) continue;
        for (size_t f = 0; f < nfields; f++) {
            if (strlen(fields[f].key) != k->via.str.size ||
                memcmp(fields[f].key, k->via.str.ptr, k->via.str.size) != 0 || seen[f])
                continue;
            seen[f] = 1;
            if (fields[f].str) {
                if (v->type != MSGPACK_OBJECT_STR || !(*fields[f].str = obj_strdup(v))) {
                    snprintf(why, whylen, "record field '%s' is not a string", fields[f].key);
                    goto out;
                }
            } else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= 0x7fffffff) {
                *fields[f].num = (int)v->via.u64;
            } else {
                snprintf(why, whylen, "record field '%s' is not a small integer", fields[f].key);
                goto out;
            }
        }
    }
    for (size_t f = 0; f < nfields; f++) {
        if (fields[f].required && !seen[f]) {
            snprintf(why, whylen, "record lacks field '%s'", fields[f].key);
            goto out;
        }
    }
    rc = 0;
out:
    msgpack_unpacked_destroy(&u);
    if (rc != 0) q_record_clear(rec);
    return rc;
}

/* ---- snapshots as JSON ---------------------------------------------------------- */

void q_job_free(q_job_t *j)
{
    if (!j) return;
    free(j->type);
    free(j->queue);
    free(j->owner);
    free(j->status);
    free(j->input);
    free(j->result);
    free(j->error);
    free(j->history);
    free(j->progress_message);
    free(j->idempotency_key);
    free(j->worker);
    free(j);
}

/* Parses JSON text, or returns JSON null when absent or unparsable. */
static json_t *json_or_null(const char *text)
{
    json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    return v ? v : json_null();
}

static json_t *time_or_null(int64_t ms)
{
    char buf[40];
    if (ms <= 0) return json_null();
    cm_format_time(ms, buf, sizeof(buf));
    return json_string(buf);
}

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

json_t *q_job_to_json(const q_job_t *j)
{
    json_t *o = json_object();
    json_t *hist = json_or_null(j->history), *h;
    size_t i;
    if (!json_is_array(hist)) {
        json_decref(hist);
        hist = json_array();
    }
    json_array_foreach(hist, i, h) { /* stored as ms since the epoch */
        json_t *at = json_object_get(h, "at");
        if (json_is_number(at))
            json_object_set_new(h, "at", time_or_null((int64_t)json_number_value(at)));
    }
    json_object_set_new(o, "id", json_string(j->id));
    json_object_set_new(o, "object", json_string("job"));
    json_object_set_new(o, "type", str_or_null(j->type));
    json_object_set_new(o, "queue", str_or_null(j->queue));
    json_object_set_new(o, "status", str_or_null(j->status));
    json_object_set_new(o, "attempt", json_integer(j->attempt));
    json_object_set_new(o, "maxAttempts", json_integer(j->max_attempts));
    json_object_set_new(o, "priority", json_integer(j->priority));
    json_object_set_new(o, "input", json_or_null(j->input));
    json_object_set_new(o, "progress",
                        json_pack("{s:i,s:o}", "percent", j->progress, "message",
                                  str_or_null(j->progress_message)));
    json_object_set_new(o, "result", json_or_null(j->result));
    json_object_set_new(o, "error", json_or_null(j->error));
    json_object_set_new(o, "attempts", hist);
    json_object_set_new(o, "cancelRequested", json_boolean(j->cancel_requested));
    json_object_set_new(o, "idempotencyKey", str_or_null(j->idempotency_key));
    json_object_set_new(o, "runAt", time_or_null(j->run_at_ms));
    json_object_set_new(o, "createdAt", time_or_null(j->created_ms));
    json_object_set_new(o, "startedAt", time_or_null(j->started_ms));
    json_object_set_new(o, "finishedAt", time_or_null(j->finished_ms));
    json_object_set_new(o, "updatedAt", time_or_null(j->updated_ms));
    return o;
}
