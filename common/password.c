/* common/password.c — argon2id password hashes through libargon2. */
#define _POSIX_C_SOURCE 200809L
#include "common/password.h"

#include <argon2.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#define SALT_LEN 16
#define TAG_LEN 32
/* Longest encoded hash verify will read: well above what hash writes (~118 characters
 * at the largest parameters), so hashes made with longer salts or tags still verify. */
#define ENCODED_MAX 512

int cm_password_hash(const char *password, size_t len, uint32_t t_cost, uint32_t m_cost_kib,
                     char *out, size_t outlen)
{
    unsigned char salt[SALT_LEN];

    if (!out || outlen == 0) return -1;
    out[0] = '\0';
    if (len > CM_PASSWORD_MAX_LEN || (!password && len > 0)) return -1;
    if (RAND_bytes(salt, sizeof(salt)) != 1) return -1;
    if (argon2id_hash_encoded(t_cost, m_cost_kib, 1, password, len, salt, sizeof(salt), TAG_LEN,
                              out, outlen) != ARGON2_OK) {
        out[0] = '\0'; /* argon2 may have written part of it */
        return -1;
    }
    return 0;
}

int cm_password_verify(const char *encoded, const char *password, size_t len)
{
    int rc;

    if (!encoded || strnlen(encoded, ENCODED_MAX + 1) > ENCODED_MAX) return -1;
    /* Over-long passwords are a wrong password, not a broken hash; refusing them before
     * argon2 runs bounds the work one request can ask for. */
    if (len > CM_PASSWORD_MAX_LEN || (!password && len > 0)) return 0;
    /* argon2id_verify checks the "$argon2id$" prefix itself (argon2i/argon2d hashes give
     * ARGON2_DECODING_FAIL) and compares the tags in constant time. */
    rc = argon2id_verify(encoded, password, len);
    if (rc == ARGON2_OK) return 1;
    if (rc == ARGON2_VERIFY_MISMATCH) return 0;
    return -1;
}

void cm_password_burn(const char *password, size_t len, uint32_t t_cost, uint32_t m_cost_kib)
{
    /* Same shape as a real hash (16-byte salt, 32-byte tag) so argon2 does exactly the
     * work of a real verify; an all-zero tag is as good as any for matching nothing. */
    char dummy[CM_PASSWORD_HASH_MAX];
    int n = snprintf(dummy, sizeof(dummy),
                     "$argon2id$v=19$m=%u,t=%u,p=1$c29tZXNhbHRzb21lc2FsdA"
                     "$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                     (unsigned)m_cost_kib, (unsigned)t_cost);
    if (n < 0 || (size_t)n >= sizeof(dummy)) return;
    (void)cm_password_verify(dummy, password, len);
}
