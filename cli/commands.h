/* cli/commands.h — operator commands run at a terminal against Redis. */
#ifndef CLI_COMMANDS_H
#define CLI_COMMANDS_H

#define CLI_UNKNOWN (-100)

/* Runs operator command cmd with its arguments (argv[0] is cmd). Returns the process
 * exit code, or CLI_UNKNOWN if cmd is not an operator command. */
int cli_command(const char *cmd, int argc, char **argv);

/* `conveyor users create ...` (PostgreSQL). argv[0] is "users". Returns the exit code. */
int cli_users(int argc, char **argv);

/* `conveyor models list|load FILE|remove ID` (PostgreSQL). argv[0] is "models". */
int cli_models(int argc, char **argv);

#endif
