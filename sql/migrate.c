/* sql/migrate.c — applies the compiled-in migrations once each. */
#include "sql/migrate.h"

#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "common/pg.h"

/* pg_advisory_lock key shared by every migrator of a database ("conveyor" in ASCII). */
#define LOCK_KEY "7165066986957401970"
#define NAME_NUM_LEN 3  /* "001" */
#define PG_IDENT_MAX 63 /* longer identifiers are silently truncated by PostgreSQL */

/* 1 if s is NNN_word. */
static int valid_name(const char *s)
{
    for (int i = 0; i < NAME_NUM_LEN; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    if (s[NAME_NUM_LEN] != '_' || !s[NAME_NUM_LEN + 1]) return 0;
    for (s += NAME_NUM_LEN + 1; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
    return 1;
}

int sql_migrations_check(const struct cm_embedded *m, char *why, size_t whylen)
{
    int prev = -1;

    for (; m->name; m++) {
        if (!valid_name(m->name)) {
            snprintf(why, whylen, "migration '%s': name is not NNN_word ([a-z0-9_])", m->name);
            return -1;
        }
        int num = (m->name[0] - '0') * 100 + (m->name[1] - '0') * 10 + (m->name[2] - '0');
        if (num <= prev) {
            snprintf(why, whylen, "migration '%s': number %03d is not above the previous one",
                     m->name, num);
            return -1;
        }
        if (!m->text || !*m->text) {
            snprintf(why, whylen, "migration '%s' is empty", m->name);
            return -1;
        }
        prev = num;
    }
    return 0;
}

/* Runs sql: with PQexec (several statements allowed) when param is NULL, else as one
 * statement with $1 = param. Returns 0, or -1 after logging what failed and why. */
static int run(PGconn *c, const char *sql, const char *param, const char *what)
{
    PGresult *r = param ? PQexecParams(c, sql, 1, NULL, &param, NULL, NULL, 0) : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;

    if (!ok) LOG_ERR("%s failed: %s", what, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    return ok ? 0 : -1;
}

/* Applies one migration and records it, in one transaction. Returns 0 or -1. */
static int apply(PGconn *c, const struct cm_embedded *m)
{
    char what[128];

    snprintf(what, sizeof(what), "migration %s", m->name);
    if (run(c, "BEGIN", NULL, what) != 0) return -1;
    if (run(c, m->text, NULL, what) != 0 ||
        run(c, "INSERT INTO schema_migrations (version) VALUES ($1)", m->name, what) != 0 ||
        run(c, "COMMIT", NULL, what) != 0) {
        PQclear(PQexec(c, "ROLLBACK"));
        return -1;
    }
    return 0;
}

/* Server notices ("schema ... already exists, skipping") go to the log, not raw stderr. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    LOG_DEBUG("postgresql: %s", message);
}

/* 1 if name is one of the versions in r (one text column). */
static int recorded(const PGresult *r, const char *name)
{
    for (int i = 0; i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), name) == 0) return 1;
    return 0;
}

/* 1 if name is one of the compiled-in migrations. */
static int known(const char *name)
{
    for (const struct cm_embedded *m = sql_migrations; m->name; m++)
        if (strcmp(m->name, name) == 0) return 1;
    return 0;
}

int sql_migrate(PGconn *c)
{
    const char *schema = cm_cfg.pg_schema;
    char why[256], sql[256];
    char *ident = NULL;
    PGresult *done = NULL;
    int applied = 0, current = 0, locked = 0, rc = -1;

    if (sql_migrations_check(sql_migrations, why, sizeof(why)) != 0) {
        LOG_ERR("%s", why);
        return -1;
    }
    if (strlen(schema) > PG_IDENT_MAX) {
        LOG_ERR("schema name '%s' is longer than %d bytes", schema, PG_IDENT_MAX);
        return -1;
    }
    ident = PQescapeIdentifier(c, schema, strlen(schema));
    if (!ident) {
        LOG_ERR("cannot quote schema name: %s", PQerrorMessage(c));
        return -1;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    /* Not the servers' statement timeout: a migration may take long, and so may the wait
     * for another host's `conveyor migrate` to finish. */
    if (run(c, "SET statement_timeout = 0", NULL, "lifting the statement timeout")) goto out;
    /* The lock comes first: concurrent CREATE SCHEMA IF NOT EXISTS can collide. */
    if (run(c, "SELECT pg_advisory_lock(" LOCK_KEY ")", NULL, "taking the migration lock"))
        goto out;
    locked = 1;
    snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS %s", ident);
    if (run(c, sql, NULL, "creating the schema")) goto out;
    snprintf(sql, sizeof(sql), "SET search_path TO %s", ident);
    if (run(c, sql, NULL, "setting search_path")) goto out;
    if (run(c,
            "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())",
            NULL, "creating schema_migrations"))
        goto out;
    done = PQexec(c, "SELECT version FROM schema_migrations");
    if (PQresultStatus(done) != PGRES_TUPLES_OK) {
        LOG_ERR("reading schema_migrations failed: %s", PQerrorMessage(c));
        goto out;
    }
    for (int i = 0; i < PQntuples(done); i++)
        if (!known(PQgetvalue(done, i, 0)))
            LOG_WARN("migration %s is recorded in schema %s but unknown to this binary",
                     PQgetvalue(done, i, 0), schema);
    for (const struct cm_embedded *m = sql_migrations; m->name; m++) {
        if (recorded(done, m->name)) {
            current++;
            continue;
        }
        if (apply(c, m) != 0) goto out;
        LOG_INFO("migration %s applied", m->name);
        applied++;
    }
    LOG_INFO("schema %s: %d applied, %d already current", schema, applied, current);
    rc = applied;
out:
    PQclear(done);
    if (locked) PQclear(PQexec(c, "SELECT pg_advisory_unlock(" LOCK_KEY ")"));
    PQfreemem(ident);
    return rc;
}

int sql_migrate_main(int argc, char **argv)
{
    PGconn *c;
    int rc;

    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: conveyor migrate\n");
        return 2;
    }
    c = cm_pg_connect();
    if (!c) {
        LOG_ERR("cannot connect to PostgreSQL");
        return 1;
    }
    rc = sql_migrate(c);
    PQfinish(c);
    return rc < 0 ? 1 : 0;
}
