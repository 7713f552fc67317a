/* workers/worker.h — `conveyor worker`: runs jobs from the Redis queues.
 *
 * One libuv loop: fetches jobs in batches from CONVEYOR_QUEUES (weighted), runs up to
 * CONVEYOR_CONCURRENCY handlers at once (workers/registry.h), renews their leases,
 * records outcomes, and on SIGTERM/SIGINT stops fetching, lets in-flight jobs finish for
 * up to CONVEYOR_SHUTDOWN_TIMEOUT_MS, then hands the rest back to the queue. */
#ifndef WK_WORKER_H
#define WK_WORKER_H

/* Runs the worker until a signal stops it (argv[0] is "worker"; no arguments).
 * Returns 0 after a clean stop, 2 on bad configuration, 1 if it cannot start. */
int wk_main(int argc, char **argv);

#endif
