/* api/jobs.h — the job endpoints (API.md "Jobs") and the parsers they use.
 *
 * Jobs live in Redis while they are hot and in the PostgreSQL archive after; reads
 * fall back to the archive and listings merge both (Redis wins: it is more current).
 * A job of another owner is answered 404, except to admins. */
#ifndef API_JOBS_H
#define API_JOBS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "api/http.h"
#include "queue/queue.h"

#define API_MAX_DELAY_S 31536000 /* delaySeconds, and how far ahead runAt may be */
#define API_CURSOR_MAX 96        /* cursor text, NUL included */

/* POST /v1/jobs: 202 + Location + the job; Idempotency-Key replays (202,
 * Idempotent-Replayed: true) or conflicts (422 CONFLICT). */
int api_jobs_create(api_req_t *r);
/* GET /v1/jobs/{id}[?wait=N] */
int api_jobs_get(api_req_t *r);
/* GET /v1/jobs?status=&type=&limit=&cursor=&owner= */
int api_jobs_list(api_req_t *r);
/* DELETE /v1/jobs/{id}: 200 canceled, 202 cancel requested, 409 already finished. */
int api_jobs_cancel(api_req_t *r);
/* POST /v1/jobs/{id}/retry: 202, or 409 unless dead or failed. */
int api_jobs_retry(api_req_t *r);

/* Enqueues a job of type (validated by the caller) with input (borrowed) for the
 * caller, and waits up to wait_ms for it to end (0: not at all; no long-poll slot free:
 * not at all either). Returns 0 with *out, the job as last read (caller frees; still
 * running when the wait ran out), or the status of the error sent. */
int api_job_submit(api_req_t *r, const char *type, const json_t *input, int64_t wait_ms,
                   q_job_t **out);

/* Renders job, just created with input (input_len bytes, as api_render renders it; NULL:
 * none) and nothing else set, as api_render(q_job_to_json(job)) would, without building
 * the JSON tree (the reply to every POST /v1/jobs). Returns the length, or more than cap
 * when it does not fit (buf then holds a part). */
size_t api_render_created(const q_job_t *job, const char *input, size_t input_len, char *buf,
                          size_t cap);

/* Sends 202 Accepted + Location + Retry-After with the job. Returns 202. */
int api_job_accepted(api_req_t *r, const q_job_t *job);

/* A validated POST /v1/jobs body. Strings and input are borrowed from the body. */
typedef struct api_job_spec {
    const char *type, *queue;
    const json_t *input;
    int64_t run_at_ms; /* 0: now */
    int max_attempts, priority, timeout_ms;
} api_job_spec_t;

/* Validates body (an object) at time now_ms into *spec, with the type's defaults.
 * Returns 0, or -1 with the offending field name in field (size flen) and a message in
 * msg (size mlen). */
int api_job_spec_parse(const json_t *body, int64_t now_ms, api_job_spec_t *spec, char *field,
                       size_t flen, char *msg, size_t mlen);

/* Writes the opaque listing cursor for (created_ms, id): base64url of "<ms>:<id>"
 * without padding. Returns 0, or -1 if out (size outlen) is too small. */
int api_cursor_encode(int64_t created_ms, const char *id, char *out, size_t outlen);

/* Decodes a cursor written by api_cursor_encode. Returns 0, or -1 if it is not one. */
int api_cursor_decode(const char *s, int64_t *created_ms, char id[Q_ID_SIZE]);

#endif
