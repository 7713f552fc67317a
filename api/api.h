/* api/api.h — `conveyor api`: the HTTP front (civetweb).
 *
 * Serves the jobs API and the operations endpoints on cm_cfg.listen with
 * cm_cfg.api_threads request threads, each with its own Redis connection; one
 * PostgreSQL pool per process; long-polls woken from the "done" channel. */
#ifndef API_API_H
#define API_API_H

/* Runs until SIGTERM or SIGINT. argv[0] is "api"; configuration comes from cm_cfg.
 * Returns 0 after a clean stop, 2 on a configuration error (no operator token, stray
 * arguments), 1 if it cannot start (e.g. the address is in use). */
int api_main(int argc, char **argv);

#endif
