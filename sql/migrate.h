/* sql/migrate.h — `conveyor migrate`: applies the compiled-in sql/NNN_*.sql migrations.
 *
 * Each migration runs once, in its own transaction, in file-name order, and is recorded
 * by name ("001_jobs") in the table schema_migrations of the configured schema
 * (cm_cfg.pg_schema, created if missing). Concurrent migrators serialize on a
 * PostgreSQL advisory lock. A migration's text must not contain BEGIN/COMMIT; it runs
 * under the session's statement_timeout per statement (a long one may start with
 * `SET LOCAL statement_timeout = ...`). */
#ifndef SQL_MIGRATE_H
#define SQL_MIGRATE_H

#include <libpq-fe.h>
#include <stddef.h>

#include "common/embed.h"

/* The migrations compiled in (generated from the sql/NNN_name.sql files), ended by
 * {NULL, NULL}. */
extern const struct cm_embedded sql_migrations[];

/* Checks a migration table: every name is NNN_word (three digits, '_', then
 * [a-z0-9_]), numbers strictly increase (no two files share one), every text is
 * non-empty. Returns 0, or -1 with the reason in why (size whylen). */
int sql_migrations_check(const struct cm_embedded *m, char *why, size_t whylen);

/* Applies the migrations of sql_migrations not yet recorded, over c (borrowed; its
 * search_path is set to the configured schema, its server notices are logged at debug
 * level from then on). Logs one line per migration applied and a summary. Returns the
 * number applied (0: already current), or -1 after logging which migration failed and
 * PostgreSQL's message (that migration is rolled back). */
int sql_migrate(PGconn *c);

/* `conveyor migrate`: connects with cm_pg_connect and runs sql_migrate. Returns the
 * process exit status: 0, 1 on failure, 2 on bad usage. */
int sql_migrate_main(int argc, char **argv);

#endif
