/* cli/main.c — `conveyor <command>`: one binary for every process and operator command. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "cli/commands.h"
#include "common/config.h"
#include "common/log.h"
#include "scheduler/scheduler.h"
#include "sql/migrate.h"
#include "workers/worker.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: conveyor <command> [args]\n"
            "processes:\n"
            "  api                 HTTP front (CONVEYOR_LISTEN)\n"
            "  worker              run jobs (CONVEYOR_QUEUES, CONVEYOR_CONCURRENCY)\n"
            "  scheduler           delayed jobs, lease recovery, archiving, retention\n"
            "  migrate             apply sql/ migrations once each\n"
            "operator commands:\n"
            "  enqueue TYPE [JSON] [--queue Q] [--delay S] [--priority P] [--max-attempts N]\n"
            "          [--count N]  (N copies; prints the count)\n"
            "  inspect JOB_ID      print a job as JSON\n"
            "  cancel JOB_ID       cancel a job\n"
            "  retry JOB_ID        re-queue a dead or failed job\n"
            "  queues              per-queue figures as JSON\n"
            "  users create --email E [--admin] [--name N] [--password-stdin]\n"
            "                      create a user (the password is generated unless given)\n"
            "  models list | load FILE | remove MODEL_ID\n"
            "                      AI providers and models (see ops/models.json)\n"
            "  config              the configuration table (Markdown)\n");
}

int main(int argc, char **argv)
{
    char err[256];
    const char *cmd = argc > 1 ? argv[1] : NULL;
    int rc;

    if (!cmd || strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 ||
        strcmp(cmd, "help") == 0) {
        usage(cmd ? stdout : stderr);
        return cmd ? 0 : 2;
    }
    if (strcmp(cmd, "config") == 0) {
        cm_config_print_table(stdout);
        return 0;
    }
    if (cm_config_load(err, sizeof(err)) != 0) {
        fprintf(stderr, "conveyor: configuration: %s\n", err);
        return 2;
    }
    cm_log_init(cmd, cm_cfg.log_level);
    signal(SIGPIPE, SIG_IGN); /* a write to a closed socket is an error, not a death */
    argc -= 1;
    argv += 1;
    if (strcmp(cmd, "api") == 0)
        rc = api_main(argc, argv);
    else if (strcmp(cmd, "worker") == 0)
        rc = wk_main(argc, argv);
    else if (strcmp(cmd, "scheduler") == 0)
        rc = sch_main(argc, argv);
    else if (strcmp(cmd, "migrate") == 0)
        rc = sql_migrate_main(argc, argv);
    else if (strcmp(cmd, "users") == 0)
        rc = cli_users(argc, argv);
    else if (strcmp(cmd, "models") == 0)
        rc = cli_models(argc, argv);
    else if ((rc = cli_command(cmd, argc, argv)) == CLI_UNKNOWN) {
        fprintf(stderr, "conveyor: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = 2;
    }
    cm_config_free();
    return rc;
}
