/* common/password.h — password hashing with argon2id (libargon2), PHC-encoded.
 *
 * All functions are thread-safe and keep no state. Nothing here logs: a password never
 * reaches a log line from this module. */
#ifndef CM_PASSWORD_H
#define CM_PASSWORD_H

#include <stddef.h>
#include <stdint.h>

#define CM_PASSWORD_HASH_MAX 160 /* encoded hash with its NUL */
#define CM_PASSWORD_MAX_LEN 4096 /* longest password hashed or verified, in bytes */

/* Hashes password (len bytes, may contain any byte) with argon2id, t_cost iterations,
 * m_cost_kib memory, parallelism 1, a 16-byte salt from OpenSSL RAND_bytes, 32-byte tag,
 * into the PHC encoded string ($argon2id$v=19$m=...,t=...,p=1$salt$hash) in out (outlen
 * bytes; CM_PASSWORD_HASH_MAX is always enough). Returns 0, or -1 if len is over
 * CM_PASSWORD_MAX_LEN, the parameters are refused by argon2 (t_cost 0, m_cost_kib < 8),
 * out is too small, or the RNG or an allocation failed. */
int cm_password_hash(const char *password, size_t len, uint32_t t_cost, uint32_t m_cost_kib,
                     char *out, size_t outlen);

/* 1 if password (len bytes) matches encoded (any argon2id parameters, as encoded), 0 if
 * not or if len is over CM_PASSWORD_MAX_LEN, -1 if encoded is not a valid argon2id hash
 * (or argon2 could not run, e.g. out of memory). The comparison is constant-time. */
int cm_password_verify(const char *encoded, const char *password, size_t len);

/* Spends the same time as a cm_password_verify with these parameters against a fixed
 * dummy hash, so that an unknown account costs what a wrong password costs. The dummy is
 * formatted per call with the caller's parameters; its tag matches no password. */
void cm_password_burn(const char *password, size_t len, uint32_t t_cost, uint32_t m_cost_kib);

#endif
