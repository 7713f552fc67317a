/* workers/registry.c — the table of job types and the validation helpers. */
#include "workers/registry.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "queue/queue.h"
#include "workers/types.h"

/* Sorted by name. */
static const wk_type_t *const types[] = {&wk_type_ai_chat, &wk_type_fail, &wk_type_noop,
                                         &wk_type_sleep};

void wk_types_close(void)
{
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (types[i]->close) types[i]->close();
}
#define NTYPES (sizeof(types) / sizeof(types[0]))

const wk_type_t *wk_type_find(const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < NTYPES; i++)
        if (strcmp(types[i]->name, name) == 0) return types[i];
    return NULL;
}

/* Writes "input.<key>" and a message; returns -1. */
static int invalid(const char *key, char *field, size_t flen, char *msg, size_t mlen,
                   const char *what)
{
    if (key)
        snprintf(field, flen, "input.%s", key);
    else
        snprintf(field, flen, "input");
    snprintf(msg, mlen, "%s", what);
    return -1;
}

int wk_type_validate(const wk_type_t *t, const json_t *input, char *field, size_t flen,
                     char *msg, size_t mlen)
{
    if (flen) field[0] = '\0';
    if (mlen) msg[0] = '\0';
    if (input && !json_is_object(input))
        return invalid(NULL, field, flen, msg, mlen, "must be an object");
    return t->validate ? t->validate(input, field, flen, msg, mlen) : 0;
}

int wk_type_max_attempts(const wk_type_t *t)
{
    return t && t->max_attempts > 0 ? t->max_attempts : cm_cfg.max_attempts;
}

int wk_type_timeout_ms(const wk_type_t *t)
{
    return t && t->timeout_ms > 0 ? t->timeout_ms : cm_cfg.job_timeout_ms;
}

int64_t wk_type_backoff_ms(const wk_type_t *t, int attempt)
{
    if (!t || !t->backoff_ms) return q_backoff_ms(attempt, cm_cfg.backoff_scale);
    double ms = (double)t->backoff_ms(attempt) * cm_cfg.backoff_scale;
    return ms < 0 ? 0 : ms > 9e15 ? (int64_t)9e15 : (int64_t)llround(ms);
}

void wk_type_names(char *out, size_t outlen)
{
    size_t used = 0;
    if (outlen) out[0] = '\0';
    for (size_t i = 0; i < NTYPES && used < outlen; i++) {
        int n = snprintf(out + used, outlen - used, "%s%s", i ? ", " : "", types[i]->name);
        if (n < 0) return;
        used += (size_t)n;
    }
}

int wk_input_int(const json_t *input, const char *key, int required, json_int_t min,
                 json_int_t max, json_int_t *out, char *field, size_t flen, char *msg,
                 size_t mlen)
{
    const json_t *v = json_object_get(input, key);
    char what[96];

    if (!v) return required ? invalid(key, field, flen, msg, mlen, "is required") : 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        snprintf(what, sizeof(what), "must be an integer between %" JSON_INTEGER_FORMAT
                 " and %" JSON_INTEGER_FORMAT, min, max);
        return invalid(key, field, flen, msg, mlen, what);
    }
    *out = json_integer_value(v);
    return 0;
}

int wk_input_bool(const json_t *input, const char *key, int *out, char *field, size_t flen,
                  char *msg, size_t mlen)
{
    const json_t *v = json_object_get(input, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return invalid(key, field, flen, msg, mlen, "must be a boolean");
    *out = json_is_true(v);
    return 0;
}

int wk_input_only(const json_t *input, const char *const *allowed, char *field, size_t flen,
                  char *msg, size_t mlen)
{
    json_t *obj = (json_t *)input; /* jansson's iterators take non-const */

    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        const char *const *a = allowed;
        while (*a && strcmp(*a, key) != 0) a++;
        if (!*a) return invalid(key, field, flen, msg, mlen, "is not a known field");
    }
    return 0;
}
