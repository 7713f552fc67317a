/* tests/unit/common/test_password.c — argon2id hashes: small parameters keep it fast. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <argon2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/password.h"

#define T 1
#define M 64 /* KiB; argon2 needs at least 8 per lane */
/* A well-formed salt and all-zero tag, as in burn's dummy. */
#define SALT_TAG "$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static void test_hash_verify(void **state)
{
    (void)state;
    char h[CM_PASSWORD_HASH_MAX];

    assert_int_equal(cm_password_hash("correct horse", 13, T, M, h, sizeof(h)), 0);
    assert_true(strncmp(h, "$argon2id$v=19$m=64,t=1,p=1$", 28) == 0);
    assert_true(strlen(h) < CM_PASSWORD_HASH_MAX);
    assert_int_equal(cm_password_verify(h, "correct horse", 13), 1);
    assert_int_equal(cm_password_verify(h, "correct horsE", 13), 0);
    assert_int_equal(cm_password_verify(h, "correct hors", 12), 0);
    assert_int_equal(cm_password_verify(h, "", 0), 0);

    /* The empty password is a password like any other. */
    assert_int_equal(cm_password_hash("", 0, T, M, h, sizeof(h)), 0);
    assert_int_equal(cm_password_verify(h, "", 0), 1);
    assert_int_equal(cm_password_verify(h, "x", 1), 0);
}

static void test_other_parameters(void **state)
{
    (void)state;
    char h[CM_PASSWORD_HASH_MAX];

    /* Verify reads the parameters from the hash, not from anywhere else. */
    assert_int_equal(cm_password_hash("pw", 2, 2, 128, h, sizeof(h)), 0);
    assert_true(strncmp(h, "$argon2id$v=19$m=128,t=2,p=1$", 29) == 0);
    assert_int_equal(cm_password_verify(h, "pw", 2), 1);
    assert_int_equal(cm_password_verify(h, "pW", 2), 0);

    /* A hash made elsewhere (libargon2 directly) with p=2, an 8-byte salt and a 16-byte
     * tag still verifies. */
    assert_int_equal(argon2id_hash_encoded(2, 256, 2, "pw", 2, "saltsalt", 8, 16, h, sizeof(h)),
                     ARGON2_OK);
    assert_true(strncmp(h, "$argon2id$v=19$m=256,t=2,p=2$", 29) == 0);
    assert_int_equal(cm_password_verify(h, "pw", 2), 1);
    assert_int_equal(cm_password_verify(h, "pw2", 3), 0);
}

static void test_salt_differs(void **state)
{
    (void)state;
    char a[CM_PASSWORD_HASH_MAX], b[CM_PASSWORD_HASH_MAX];

    assert_int_equal(cm_password_hash("same", 4, T, M, a, sizeof(a)), 0);
    assert_int_equal(cm_password_hash("same", 4, T, M, b, sizeof(b)), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(cm_password_verify(a, "same", 4), 1);
    assert_int_equal(cm_password_verify(b, "same", 4), 1);
}

static void test_nul_inside(void **state)
{
    (void)state;
    char h[CM_PASSWORD_HASH_MAX];

    assert_int_equal(cm_password_hash("ab\0cd", 5, T, M, h, sizeof(h)), 0);
    assert_int_equal(cm_password_verify(h, "ab\0cd", 5), 1);
    assert_int_equal(cm_password_verify(h, "ab", 2), 0); /* not cut at the NUL */
    assert_int_equal(cm_password_verify(h, "ab\0ce", 5), 0);
    assert_int_equal(cm_password_verify(h, "ab\0cd\0", 6), 0);
}

static void test_invalid_encoded(void **state)
{
    (void)state;
    char h[CM_PASSWORD_HASH_MAX], mangled[CM_PASSWORD_HASH_MAX];
    static const char *const bad[] = {
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=64,t=1,p=1$",
        "$argon2id$v=19$m=64,t=1,p=1$!!!!$@@@@",
        "$argon2id$v=19$m=abc,t=1,p=1" SALT_TAG,
        "$argon2id$v=19$m=64,t=0,p=1" SALT_TAG,
        /* argon2i and argon2d are not argon2id */
        "$argon2i$v=19$m=64,t=1,p=1" SALT_TAG,
        "$argon2d$v=19$m=64,t=1,p=1" SALT_TAG,
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW", /* bcrypt */
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (cm_password_verify(bad[i], "pw", 2) != -1) fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(cm_password_verify(NULL, "pw", 2), -1);

    /* A real hash cut short is no longer a hash. */
    assert_int_equal(cm_password_hash("pw", 2, T, M, h, sizeof(h)), 0);
    snprintf(mangled, sizeof(mangled), "%.*s", (int)strlen(h) - 30, h);
    assert_int_equal(cm_password_verify(mangled, "pw", 2), -1);

    /* A well-formed dummy (as burn uses) is a valid hash that matches nothing. */
    assert_int_equal(cm_password_verify("$argon2id$v=19$m=64,t=1,p=1" SALT_TAG, "pw", 2), 0);

    /* Over-long encoded strings are refused without reading them all. */
    char *big = malloc(100000);
    memset(big, '$', 100000 - 1);
    big[100000 - 1] = '\0';
    assert_int_equal(cm_password_verify(big, "pw", 2), -1);
    free(big);
}

static void test_limits(void **state)
{
    (void)state;
    char h[CM_PASSWORD_HASH_MAX], small[40];
    char *pw = malloc(CM_PASSWORD_MAX_LEN + 1);

    memset(pw, 'p', CM_PASSWORD_MAX_LEN + 1);
    assert_int_equal(cm_password_hash(pw, CM_PASSWORD_MAX_LEN + 1, T, M, h, sizeof(h)), -1);
    assert_int_equal(cm_password_hash(pw, CM_PASSWORD_MAX_LEN, T, M, h, sizeof(h)), 0);
    assert_int_equal(cm_password_verify(h, pw, CM_PASSWORD_MAX_LEN), 1);
    assert_int_equal(cm_password_verify(h, pw, CM_PASSWORD_MAX_LEN + 1), 0);
    free(pw);

    assert_int_equal(cm_password_hash("pw", 2, T, M, small, sizeof(small)), -1);
    assert_string_equal(small, "");
    assert_int_equal(cm_password_hash("pw", 2, 0, M, h, sizeof(h)), -1); /* t = 0 */
    assert_int_equal(cm_password_hash("pw", 2, T, 4, h, sizeof(h)), -1); /* m < 8 */
    assert_int_equal(cm_password_hash(NULL, 2, T, M, h, sizeof(h)), -1);
    assert_int_equal(cm_password_hash("pw", 2, T, M, NULL, 0), -1);
}

static void test_burn(void **state)
{
    (void)state;
    char *pw = malloc(CM_PASSWORD_MAX_LEN + 1);
    memset(pw, 'p', CM_PASSWORD_MAX_LEN + 1);

    cm_password_burn("whatever", 8, T, M);
    cm_password_burn("", 0, T, M);
    cm_password_burn("ab\0cd", 5, 2, 128);
    cm_password_burn(pw, CM_PASSWORD_MAX_LEN + 1, T, M); /* refused like verify refuses it */
    cm_password_burn("x", 1, 0, 0);                      /* parameters argon2 refuses */
    cm_password_burn("x", 1, UINT32_MAX, 0);
    free(pw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_verify),  cmocka_unit_test(test_other_parameters),
        cmocka_unit_test(test_salt_differs), cmocka_unit_test(test_nul_inside),
        cmocka_unit_test(test_invalid_encoded), cmocka_unit_test(test_limits),
        cmocka_unit_test(test_burn),
    };
    return cmocka_run_group_tests_name("password", tests, NULL, NULL);
}
