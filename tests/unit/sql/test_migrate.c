/* tests/unit/sql/test_migrate.c — the compiled-in migration table and its checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* after the four above, which it needs */
#include <cmocka.h>
#include <string.h>

#include "sql/migrate.h"

static void test_embedded_table(void **state)
{
    (void)state;
    char why[256] = "";
    int n = 0;

    assert_int_equal(sql_migrations_check(sql_migrations, why, sizeof(why)), 0);
    assert_string_equal(why, "");
    for (const struct cm_embedded *m = sql_migrations; m->name; m++)
        n++;
    assert_true(n >= 1);
    /* 001 is the jobs archive; names are file names without ".sql" */
    assert_string_equal(sql_migrations[0].name, "001_jobs");
    assert_non_null(strstr(sql_migrations[0].text, "CREATE TABLE jobs"));
    for (int i = 1; i < n; i++)
        assert_true(strcmp(sql_migrations[i - 1].name, sql_migrations[i].name) < 0);
}

/* Expects the check to fail on m with a reason naming culprit. */
static void expect_bad(const struct cm_embedded *m, const char *culprit)
{
    char why[256] = "";
    assert_int_equal(sql_migrations_check(m, why, sizeof(why)), -1);
    assert_non_null(strstr(why, culprit));
}

static void test_numbers_must_increase(void **state)
{
    (void)state;
    const struct cm_embedded dup[] = {
        {"001_a", "SELECT 1"}, {"002_b", "SELECT 1"}, {"002_c", "SELECT 1"}, {NULL, NULL}};
    const struct cm_embedded order[] = {{"002_a", "SELECT 1"}, {"001_b", "SELECT 1"}, {NULL, NULL}};
    const struct cm_embedded gaps[] = {
        {"001_a", "SELECT 1"}, {"005_b", "SELECT 1"}, {"010_c", "SELECT 1"}, {NULL, NULL}};
    const struct cm_embedded none[] = {{NULL, NULL}};
    char why[64];

    expect_bad(dup, "002_c");
    expect_bad(order, "001_b");
    assert_int_equal(sql_migrations_check(gaps, why, sizeof(why)), 0);
    assert_int_equal(sql_migrations_check(none, why, sizeof(why)), 0);
}

static void test_names(void **state)
{
    (void)state;
    const char *bad[] = {"1_jobs",   "01_jobs",      "001jobs",  "001_",      "001-jobs",
                         "001_Jobs", "001_jobs.sql", "abc_jobs", "001_jo bs", "001_a-b"};
    const char *good[] = {"000_x", "001_jobs", "999_add_index_2"};
    char why[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const struct cm_embedded m[] = {{bad[i], "SELECT 1"}, {NULL, NULL}};
        expect_bad(m, bad[i]);
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const struct cm_embedded m[] = {{good[i], "SELECT 1"}, {NULL, NULL}};
        assert_int_equal(sql_migrations_check(m, why, sizeof(why)), 0);
    }
}

static void test_empty_text(void **state)
{
    (void)state;
    const struct cm_embedded empty[] = {{"001_a", "SELECT 1"}, {"002_b", ""}, {NULL, NULL}};
    const struct cm_embedded null[] = {{"001_a", NULL}, {NULL, NULL}};

    expect_bad(empty, "002_b");
    expect_bad(null, "001_a");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_table),
        cmocka_unit_test(test_numbers_must_increase),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_empty_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
