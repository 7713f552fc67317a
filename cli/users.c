/* cli/users.c — `conveyor users create`: accounts made at a terminal (the first admin). */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/accounts.h"
#include "cli/commands.h"
#include "common/config.h"
#include "common/password.h"
#include "common/pg.h"
#include "common/util.h"

#define GENERATED_LEN 24 /* base62 characters of a generated password (~143 bits) */

static int usage(void)
{
    fprintf(stderr, "usage: conveyor users create --email EMAIL [--admin] [--name NAME]\n"
                    "       [--password-stdin]   (else a password is generated)\n"
                    "prints the user as JSON, with the password when it was generated\n");
    return 2;
}

/* Reads one line (the password) from stdin into out. Returns its length or -1. */
static int read_password(char *out, size_t n)
{
    size_t len;
    if (!fgets(out, (int)n, stdin)) return -1;
    len = strcspn(out, "\r\n");
    out[len] = '\0';
    return (int)len;
}

static int create(int argc, char **argv)
{
    const char *email = NULL, *name = NULL, *role = "user";
    char pw[1100], hash[CM_PASSWORD_HASH_MAX], id[40];
    int from_stdin = 0, generated = 0, rc = 1;
    PGconn *pg = NULL;
    PGresult *res = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--email") == 0 && i + 1 < argc) email = argv[++i];
        else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) name = argv[++i];
        else if (strcmp(argv[i], "--admin") == 0) role = "admin";
        else if (strcmp(argv[i], "--password-stdin") == 0) from_stdin = 1;
        else return usage();
    }
    if (!email) return usage();
    if (!api_email_valid(email)) {
        fprintf(stderr, "conveyor users: '%s' is not an email address\n", email);
        return 2;
    }
    if (from_stdin) {
        int len = read_password(pw, sizeof(pw));
        if (len < cm_cfg.password_min_length || len > 1024) {
            fprintf(stderr, "conveyor users: the password must be %d to 1024 characters\n",
                    cm_cfg.password_min_length);
            return 2;
        }
    } else {
        if (cm_random_id(pw, sizeof(pw), "", GENERATED_LEN) != 0) return 1;
        generated = 1;
    }
    if (cm_password_hash(pw, strlen(pw), (uint32_t)cm_cfg.argon2_iterations,
                         (uint32_t)cm_cfg.argon2_memory_kib, hash, sizeof(hash)) != 0 ||
        cm_random_id(id, sizeof(id), "usr_", CM_ID_RAND_LEN) != 0) {
        fprintf(stderr, "conveyor users: cannot hash the password\n");
        goto out;
    }
    if (!(pg = cm_pg_connect())) goto out;
    {
        const char *p[] = {id, email, name, role, hash};
        res = PQexecParams(pg,
                           "INSERT INTO users (id, email, name, role, password_hash) "
                           "VALUES ($1, $2, $3, $4, $5)",
                           5, NULL, p, NULL, NULL, 0);
    }
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, "23505") == 0)
            fprintf(stderr, "conveyor users: a user with email %s already exists\n", email);
        else
            fprintf(stderr, "conveyor users: %s", PQerrorMessage(pg));
        goto out;
    }
    json_t *o = json_pack("{s:s,s:s,s:s}", "id", id, "email", email, "role", role);
    if (generated) json_object_set_new(o, "password", json_string(pw));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text) puts(text);
    free(text);
    rc = text ? 0 : 1;
out:
    OPENSSL_cleanse(pw, sizeof(pw));
    PQclear(res);
    if (pg) PQfinish(pg);
    return rc;
}

int cli_users(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "create") == 0) return create(argc - 1, argv + 1);
    return usage();
}
