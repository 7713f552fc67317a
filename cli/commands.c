/* cli/commands.c — enqueue, inspect, cancel, retry, queues. */
#define _POSIX_C_SOURCE 200809L
#include "cli/commands.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* conveyor enqueue TYPE [INPUT] [--queue Q] [--delay S] [--priority P] [--max-attempts N]
 * [--count N] — prints the job id, or the number of jobs when N > 1 (one round trip
 * per job). Returns the exit status. */
static int cmd_enqueue(q_conn_t *c, int argc, char **argv)
{
    q_new_job_t job = {.queue = "default", .owner = "operator", .input = "{}",
                       .priority = Q_PRIORITY_DEFAULT, .max_attempts = cm_cfg.max_attempts};
    char id[Q_ID_SIZE], *input = NULL;
    long count = 1;
    int outcome, rc = 0, pos = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--queue") == 0 && v) job.queue = argv[++i];
        else if (strcmp(a, "--delay") == 0 && v) job.run_at_ms = cm_now_ms() + (int64_t)(atof(argv[++i]) * 1000);
        else if (strcmp(a, "--priority") == 0 && v) job.priority = atoi(argv[++i]);
        else if (strcmp(a, "--max-attempts") == 0 && v) job.max_attempts = atoi(argv[++i]);
        else if (strcmp(a, "--count") == 0 && v) count = parse_count(argv[++i]);
        else if (pos == 0 && a[0] != '-') job.type = a, pos++;
        else if (pos == 1 && a[0] != '-') job.input = a, pos++;
        else {
            fprintf(stderr, "conveyor enqueue: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    json_error_t e;
    json_t *parsed = json_loads(job.input, 0, &e);
    if (!job.type || !json_is_object(parsed) || count < 1 || count > ENQUEUE_MAX_COUNT) {
        fprintf(stderr, "conveyor enqueue: need TYPE, a JSON object as input and a --count "
                        "of 1-%d\n", ENQUEUE_MAX_COUNT);
        json_decref(parsed);
        return 2;
    }
    input = json_dumps(parsed, JSON_COMPACT);
    json_decref(parsed);
    job.input = input;
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
    free(input);
    if (rc) {
        if (done > 0) fprintf(stderr, "conveyor enqueue: %ld of %ld enqueued\n", done, count);
        return fail("enqueue", rc);
    }
    if (count > 1) printf("%ld\n", count);
    else puts(id);
    return 0;
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
