/* scheduler/scheduler.h — `conveyor scheduler`: the process that moves jobs over time.
 *
 * Every CONVEYOR_SCHEDULER_INTERVAL_MS the process that holds the "scheduler" lock
 * (q_leader, CONVEYOR_LEADER_TTL_MS) promotes due delayed/retrying jobs, reclaims
 * expired leases and archives terminal jobs to PostgreSQL (scheduler/archive.h); every
 * process runs the periodic duties whose own lock it gets (scheduler/cron.h). Any
 * number may run: the others wait to take over. Redis and PostgreSQL outages are
 * waited out with backoff; SIGTERM/SIGINT finish the current tick and exit. */
#ifndef SCH_SCHEDULER_H
#define SCH_SCHEDULER_H

/* Runs the scheduler until SIGTERM/SIGINT. Returns the exit status: 0, 1 if it could
 * not start, 2 on bad usage. */
int sch_main(int argc, char **argv);

#endif
