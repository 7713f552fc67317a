/* tests/unit/api/test_route.c — route matching, aliases, 404 and 405. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "api/jobs.h"
#include "api/ops.h"
#include "api/route.h"

static char param[API_PARAM_MAX], allow[64];

static const api_route_t *find(const char *method, const char *path)
{
    return api_route_find(method, path, param, sizeof(param), allow, sizeof(allow));
}

static void test_routes_and_aliases(void **state)
{
    (void)state;
    const api_route_t *rt;
    const char *lists[] = {"/v1/jobs", "/api/v1/jobs", "/api/jobs", "/v1/jobs/"};
    for (size_t i = 0; i < 4; i++) {
        assert_non_null(rt = find("GET", lists[i]));
        assert_ptr_equal(rt->handler, api_jobs_list);
        assert_int_equal(rt->auth, API_AUTH_USER);
        assert_non_null(rt = find("POST", lists[i]));
        assert_ptr_equal(rt->handler, api_jobs_create);
    }
    assert_non_null(rt = find("GET", "/v1/jobs/job_abc"));
    assert_ptr_equal(rt->handler, api_jobs_get);
    assert_string_equal(param, "job_abc");
    assert_non_null(rt = find("DELETE", "/api/v1/jobs/job_xyz"));
    assert_ptr_equal(rt->handler, api_jobs_cancel);
    assert_string_equal(param, "job_xyz");
    assert_non_null(rt = find("POST", "/api/jobs/job_1/retry"));
    assert_ptr_equal(rt->handler, api_jobs_retry);
    assert_string_equal(param, "job_1");
    assert_non_null(rt = find("GET", "/v1/queues"));
    assert_ptr_equal(rt->handler, api_ops_queues);
    assert_int_equal(rt->auth, API_AUTH_ADMIN);
    assert_non_null(rt = find("GET", "/healthz"));
    assert_int_equal(rt->auth, API_AUTH_NONE);
    assert_non_null(rt = find("GET", "/readyz"));
    assert_ptr_equal(rt->handler, api_ops_readyz);
}

static void test_not_found_and_not_allowed(void **state)
{
    (void)state;
    const char *missing[] = {"/", "/v1", "/v1/job", "/v1/jobsx", "/v1/jobs//retry",
                             "/v1/jobs/a/b", "/v1/jobs/a/retry/x", "/api/healthz",
                             "/v2/jobs", "/api/v1", "/V1/jobs", "/api/api/jobs"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        if (find("GET", missing[i])) fail_msg("matched %s", missing[i]);
        assert_string_equal(allow, "");
    }
    assert_null(find("PUT", "/v1/jobs"));
    assert_string_equal(allow, "POST, GET");
    assert_null(find("POST", "/v1/jobs/job_1"));
    assert_string_equal(allow, "GET, DELETE");
    assert_null(find("GET", "/api/v1/jobs/job_1/retry"));
    assert_string_equal(allow, "POST");
    assert_null(find("POST", "/healthz"));
    assert_string_equal(allow, "GET");
}

static void test_long_param(void **state)
{
    (void)state;
    char path[300] = "/v1/jobs/";
    memset(path + 9, 'a', 200);
    path[209] = '\0';
    assert_non_null(find("GET", path)); /* routed, but no id fits: the handler says 404 */
    assert_string_equal(param, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_and_aliases),
        cmocka_unit_test(test_not_found_and_not_allowed),
        cmocka_unit_test(test_long_param),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
