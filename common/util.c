/* common/util.c */
#define _POSIX_C_SOURCE 200809L
#include "common/util.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t cm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cm_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cm_cond_init_monotonic(pthread_cond_t *cond)
{
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc) return rc;
    if (!(rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC))) rc = pthread_cond_init(cond, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

void cm_deadline_ms(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Random bytes for ids and secrets, drawn from RAND_bytes a pool at a time: each call of
 * RAND_bytes costs a getpid system call (OpenSSL's fork check), one per job id was
 * measurable. Per thread; used bytes are wiped. No process of ours forks. */
static _Thread_local struct {
    unsigned char b[1024];
    size_t used;
} pool = {.used = sizeof(pool.b)};

static int random_byte(unsigned char *out)
{
    if (pool.used == sizeof(pool.b)) {
        if (RAND_bytes(pool.b, sizeof(pool.b)) != 1) return -1;
        pool.used = 0;
    }
    *out = pool.b[pool.used];
    pool.b[pool.used++] = 0;
    return 0;
}

int cm_random_id(char *out, size_t outlen, const char *prefix, size_t n)
{
    static const char alphabet[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t pl = strlen(prefix), i = 0;
    unsigned char c;

    if (pl + n + 1 > outlen) return -1;
    memcpy(out, prefix, pl);
    while (i < n) {
        if (random_byte(&c) != 0) return -1;
        if (c < 248) out[pl + i++] = alphabet[c % 62]; /* 248 = 4*62: unbiased */
    }
    out[pl + n] = '\0';
    return 0;
}

static EVP_MD *sha256_md; /* fetched once: an implicit fetch per digest cost more than it */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA2-256", NULL); }

void cm_sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    pthread_once(&sha256_once, sha256_fetch);
    EVP_Digest(data, len, out, &n, sha256_md ? sha256_md : EVP_sha256(), NULL);
}

void cm_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    cm_sha256(data, len, md);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

int cm_secure_equal_digest(const char *s, const unsigned char digest[32])
{
    unsigned char d[32];
    /* Compare digests so the time does not depend on where the strings differ. */
    cm_sha256(s, strlen(s), d);
    return CRYPTO_memcmp(d, digest, sizeof(d)) == 0;
}

int cm_secure_equal(const char *a, const char *b)
{
    unsigned char db[32];
    cm_sha256(b, strlen(b), db);
    return cm_secure_equal_digest(a, db);
}

/* Writes v as exactly n decimal digits at p. */
static void put_digits(char *p, int v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10) p[i] = (char)('0' + v % 10);
}

void cm_format_time(int64_t ms, char *out, size_t outlen)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    int year = tm.tm_year + 1900;
    if (ms < 0 || year > 9999 || outlen < 25) { /* rare: the general way */
        snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
        return;
    }
    /* every reply of a job shows a few: digits by hand, snprintf was most of their cost */
    memcpy(out, "0000-00-00T00:00:00.000Z", 25);
    put_digits(out, year, 4);
    put_digits(out + 5, tm.tm_mon + 1, 2);
    put_digits(out + 8, tm.tm_mday, 2);
    put_digits(out + 11, tm.tm_hour, 2);
    put_digits(out + 14, tm.tm_min, 2);
    put_digits(out + 17, tm.tm_sec, 2);
    put_digits(out + 20, (int)(ms % 1000), 3);
}
