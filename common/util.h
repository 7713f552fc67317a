/* common/util.h — small helpers: clocks, random ids, digests, constant-time compare. */
#ifndef CM_UTIL_H
#define CM_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CM_ID_RAND_LEN 22 /* base62 characters after the prefix (~131 bits) */

/* Wall clock in milliseconds since the epoch. */
int64_t cm_now_ms(void);

/* Monotonic clock in milliseconds. */
int64_t cm_mono_ms(void);

/* Initializes cond to time its waits on the monotonic clock (a step of the wall clock
 * neither cuts them short nor stretches them). Returns 0 or an errno value. */
int cm_cond_init_monotonic(pthread_cond_t *cond);

/* Writes into ts the monotonic time ms from now: the deadline of a timed wait on such a
 * cond. */
void cm_deadline_ms(struct timespec *ts, int64_t ms);

/* Writes prefix + n random base62 characters + NUL into out (size outlen) from the
 * OpenSSL RNG. Returns 0, or -1 if the RNG failed or out is too small. */
int cm_random_id(char *out, size_t outlen, const char *prefix, size_t n);

/* Writes the SHA-256 digest of data into out. */
void cm_sha256(const void *data, size_t len, unsigned char out[32]);

/* Writes the lowercase hex SHA-256 of data (65 bytes with the NUL) into out. */
void cm_sha256_hex(const void *data, size_t len, char out[65]);

/* Compares two strings in time that depends only on their lengths. Returns 1 if equal. */
int cm_secure_equal(const char *a, const char *b);

/* Compares s with a secret known by its SHA-256 digest (computed once, e.g. at start-up)
 * in time independent of where they differ. Returns 1 if equal. */
int cm_secure_equal_digest(const char *s, const unsigned char digest[32]);

/* Formats ms since the epoch as RFC 3339 UTC with milliseconds into out (>= 25 bytes). */
void cm_format_time(int64_t ms, char *out, size_t outlen);

#endif
