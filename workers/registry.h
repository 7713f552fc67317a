/* workers/registry.h — the job types this build knows: name, input validation, handler,
 * defaults.
 *
 * A static table (no loop needed): the api links it to validate input when a job is
 * enqueued, the worker to run jobs. Types live one family per file (workers/types_*.c). */
#ifndef WK_REGISTRY_H
#define WK_REGISTRY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "workers/job.h"

typedef struct wk_type wk_type_t;

struct wk_type {
    const char *name; /* q_valid_type */
    /* Checks input (an object, or NULL when absent). Returns 0, or -1 with the offending
     * field's path ("input.ms") in field and what is wrong in msg. NULL: any object. */
    int (*validate)(const json_t *input, char *field, size_t flen, char *msg, size_t mlen);
    /* Starts an attempt; the handler completes it later or at once (workers/job.h). */
    void (*start)(wk_job_t *job);
    /* Asks a running attempt to stop; the handler then completes it. NULL only for types
     * whose start always completes at once. */
    void (*cancel)(wk_job_t *job);
    int timeout_ms;   /* maximum run time of one attempt; 0: CONVEYOR_JOB_TIMEOUT_MS */
    int max_attempts; /* 0: CONVEYOR_MAX_ATTEMPTS */
    /* Delay before retrying after failed attempt (1-based), before
     * CONVEYOR_BACKOFF_SCALE; NULL: the default (q_backoff_ms). */
    int64_t (*backoff_ms)(int attempt);
    /* The worker is closing: free what the type keeps on the loop (NULL: nothing). */
    void (*close)(void);
};

/* The type called name, or NULL. Static. */
const wk_type_t *wk_type_find(const char *name);

/* Validates input for t (input NULL: absent). Returns 0, or -1 with a field path and a
 * message written into field (size flen) and msg (size mlen). */
int wk_type_validate(const wk_type_t *t, const json_t *input, char *field, size_t flen,
                     char *msg, size_t mlen);

/* Attempts a job of type t gets (t NULL: the configured default). */
int wk_type_max_attempts(const wk_type_t *t);

/* Maximum run time in ms of one attempt of t (t NULL: the configured default). */
int wk_type_timeout_ms(const wk_type_t *t);

/* Delay in ms before retrying after failed attempt (1-based) of t (t NULL: default),
 * scaled by CONVEYOR_BACKOFF_SCALE. */
int64_t wk_type_backoff_ms(const wk_type_t *t, int attempt);

/* Calls every type's close (the worker is closing its loop). */
void wk_types_close(void);

/* Writes the known type names, sorted, as "a, b, c" into out (size outlen). */
void wk_type_names(char *out, size_t outlen);

/* Helpers for validators. Each returns 0, or -1 with field "input.<key>" and msg set. */

/* Reads input.<key> as an integer in [min, max] into *out; absent: an error if
 * required, else *out is left alone. */
int wk_input_int(const json_t *input, const char *key, int required, json_int_t min,
                 json_int_t max, json_int_t *out, char *field, size_t flen, char *msg,
                 size_t mlen);

/* Reads input.<key> as a boolean into *out (0/1); absent: *out is left alone. */
int wk_input_bool(const json_t *input, const char *key, int *out, char *field, size_t flen,
                  char *msg, size_t mlen);

/* Refuses keys of input that are not in allowed (NULL-terminated). */
int wk_input_only(const json_t *input, const char *const *allowed, char *field, size_t flen,
                  char *msg, size_t mlen);

#endif
