/* cli/commands.c — enqueue, inspect, cancel, retry, queues. */
#define _POSIX_C_SOURCE 200809L
#include "cli/commands.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/jobs.h"
#include "common/config.h"
#include "common/util.h"
#include "queue/queue.h"

/* Prints a JSON value (takes it) on stdout. */
static void print_json(json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (s) puts(s);
    free(s);
    json_decref(v);
}

static int fail(const char *what, int err)
{
    fprintf(stderr, "conveyor: %s: %s\n", what, q_strerror(err));
    return err == Q_ENOTFOUND ? 3 : 1;
}

#define ENQUEUE_MAX_COUNT 10000000 /* `enqueue --count N`: N copies (load tests) */

/* The decimal count in s, or 0 when s is not a plain decimal number. */
static long parse_count(const char *s)
{
    char *end;
    long n = strtol(s, &end, 10);
    return end != s && *end == '\0' ? n : 0;
}

/* The whole of s as a number, or NAN (empty, trailing characters, out of range). */
static double number_arg(const char *s)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    return end != s && *end == '\0' && errno == 0 && isfinite(d) ? d : NAN;
}

/* conveyor enqueue TYPE [INPUT] [--queue Q] [--delay S] [--priority P] [--max-attempts N]
 * [--count N] — checked as POST /v1/jobs checks its body (type known, its input valid,
 * every option in range); prints the job id, or the number of jobs when N > 1. Returns
 * the exit status. */
static int cmd_enqueue(q_conn_t *c, int argc, char **argv)
{
    q_new_job_t job = {.owner = "operator"};
    const char *type = NULL, *text = "{}";
    char id[Q_ID_SIZE], field[64], msg[256], *input = NULL;
    long count = 1;
    int outcome, rc = 0, pos = 0, st = 2;
    json_t *body = json_object(), *parsed = NULL;
    api_job_spec_t spec;
    json_error_t e;

    if (!body) return fail("enqueue", Q_ENOMEM);
    for (int i = 1; i < argc; i++) {
        static const struct { const char *opt, *key; int integer; } nums[] = {
            {"--delay", "delaySeconds", 0}, {"--priority", "priority", 1},
            {"--max-attempts", "maxAttempts", 1}};
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t k = 0;
        while (k < sizeof(nums) / sizeof(nums[0]) && strcmp(a, nums[k].opt) != 0) k++;
        if (k < sizeof(nums) / sizeof(nums[0]) && v) {
            double d = number_arg(argv[++i]);
            if (isnan(d) || (nums[k].integer && (d != floor(d) || fabs(d) > 1e15))) {
                fprintf(stderr, "conveyor enqueue: %s needs %s, not '%s'\n", a,
                        nums[k].integer ? "an integer" : "a number", v);
                goto out;
            }
            json_object_set_new(body, nums[k].key,
                                nums[k].integer ? json_integer((json_int_t)d) : json_real(d));
        } else if (strcmp(a, "--queue") == 0 && v) {
            json_object_set_new(body, "queue", json_string(argv[++i]));
        } else if (strcmp(a, "--count") == 0 && v) {
            count = parse_count(argv[++i]);
        } else if (pos == 0 && a[0] != '-') {
            type = a, pos++;
        } else if (pos == 1 && a[0] != '-') {
            text = a, pos++;
        } else {
            fprintf(stderr, "conveyor enqueue: unexpected argument '%s'\n", a);
            goto out;
        }
    }
    parsed = json_loads(text, 0, &e);
    if (!type || !json_is_object(parsed) || count < 1 || count > ENQUEUE_MAX_COUNT) {
        fprintf(stderr, "conveyor enqueue: need TYPE, a JSON object as input and a --count "
                        "of 1-%d\n", ENQUEUE_MAX_COUNT);
        goto out;
    }
    json_object_set_new(body, "type", json_string(type));
    json_object_set(body, "input", parsed);
    if (api_job_spec_parse(body, cm_now_ms(), &spec, field, sizeof(field), msg, sizeof(msg)) != 0) {
        fprintf(stderr, "conveyor enqueue: %s: %s\n", field, msg);
        goto out;
    }
    if (!(input = json_dumps(spec.input, JSON_COMPACT))) { /* the input given, checked */
        st = fail("enqueue", Q_ENOMEM);
        goto out;
    }
    job.type = spec.type;
    job.queue = spec.queue;
    job.input = input;
    job.max_attempts = spec.max_attempts;
    job.priority = spec.priority;
    job.timeout_ms = spec.timeout_ms;
    job.run_at_ms = spec.run_at_ms;
    long done = 0;
    if (count == 1) {
        if ((rc = q_enqueue(c, &job, id, &outcome, NULL)) == 0) done = 1;
    } else { /* Q_BATCH_MAX jobs per script call */
        const q_new_job_t *jobs[Q_BATCH_MAX];
        q_enq_result_t res[Q_BATCH_MAX];
        for (int i = 0; i < Q_BATCH_MAX; i++) jobs[i] = &job;
        while (done < count && rc == 0) {
            int n = count - done < Q_BATCH_MAX ? (int)(count - done) : Q_BATCH_MAX;
            rc = q_enqueue_many(c, jobs, n, res);
            for (int i = 0; i < n && rc == 0; i++)
                if ((rc = res[i].rc) == 0) done++;
        }
    }
    if (rc) {
        if (done > 0) fprintf(stderr, "conveyor enqueue: %ld of %ld enqueued\n", done, count);
        st = fail("enqueue", rc);
        goto out;
    }
    if (count > 1) printf("%ld\n", count);
    else puts(id);
    st = 0;
out:
    free(input);
    json_decref(parsed);
    json_decref(body);
    return st;
}

static int cmd_inspect(q_conn_t *c, const char *id)
{
    q_job_t *j;
    int rc = q_job_get(c, id, &j);
    if (rc && !j) return fail("inspect", rc);
    print_json(q_job_to_json(j));
    q_job_free(j);
    return 0;
}

int cli_command(const char *cmd, int argc, char **argv)
{
    char status[32];
    int rc;
    q_conn_t *c;

    if (strcmp(cmd, "enqueue") && strcmp(cmd, "inspect") && strcmp(cmd, "cancel") &&
        strcmp(cmd, "retry") && strcmp(cmd, "queues"))
        return CLI_UNKNOWN;
    if (strcmp(cmd, "queues") != 0 && strcmp(cmd, "enqueue") != 0 && argc != 2) {
        fprintf(stderr, "usage: conveyor %s JOB_ID\n", cmd);
        return 2;
    }
    c = q_conn_new(cm_cfg.redis_host, cm_cfg.redis_port, cm_cfg.redis_prefix,
                   cm_cfg.redis_timeout_ms);
    if (!c) return 1;
    if (strcmp(cmd, "enqueue") == 0) {
        rc = cmd_enqueue(c, argc, argv);
    } else if (strcmp(cmd, "inspect") == 0) {
        rc = cmd_inspect(c, argv[1]);
    } else if (strcmp(cmd, "cancel") == 0) {
        rc = q_cancel(c, argv[1], status);
        rc = rc && rc != Q_ECONFLICT ? fail("cancel", rc) : (puts(status), rc ? 1 : 0);
    } else if (strcmp(cmd, "retry") == 0) {
        rc = q_retry(c, argv[1], status);
        rc = rc && rc != Q_ECONFLICT ? fail("retry", rc) : (puts(rc ? status : "queued"), rc ? 1 : 0);
    } else {
        json_t *stats;
        rc = q_queue_stats(c, &stats);
        if (rc == 0) print_json(stats);
        else rc = fail("queues", rc);
    }
    q_conn_free(c);
    return rc;
}
