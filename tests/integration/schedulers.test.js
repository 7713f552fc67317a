'use strict';
// Several schedulers at once: no job promoted (and so run) twice; leadership moves on
// when a leader dies.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const { withStack, waitFor } = require('./lib/stack');

test('two schedulers, 200 delayed jobs: each runs exactly once',
  { timeout: 90000 }, () => withStack({ schedulers: 2 }, async (s) => {
    const ids = await s.enqueueMany(200, { type: 'noop', delaySeconds: 1 }, { parallel: 20 });
    const jobs = await s.waitAll(ids, 'succeeded', { timeout: 30000 });
    for (const j of jobs) {
      assert.equal(j.attempt, 1, `${j.id} ran ${j.attempt} times`);
      assert.deepEqual(j.attempts, []);
      assert.ok(Date.parse(j.startedAt) >= Date.parse(j.runAt), `${j.id} ran before runAt`);
    }
    let q;
    await waitFor(async () => (q = await s.queueStats()) && q.running === 0,
      { what: 'nothing running' });
    assert.equal(q.processed, 200, 'processed once each');
    assert.equal(q.scheduled, 0);
    assert.equal(q.ready, 0);
    assert.equal(await s.redis('ZCARD', s.queueKey('default', 'scheduled')), '0');
    for (const [i, p] of s.schedulers.entries()) assert.ok(p.alive, `scheduler ${i} alive`);
  }));

test('a scheduler leader killed with -9: another takes over promotion and lease recovery',
  { timeout: 90000 }, () => withStack({ schedulers: 2, env: { CONVEYOR_LEADER_TTL_MS: '1000' } },
    async (s) => {
      // warm-up: a delayed job runs with both schedulers up
      const warm = await s.enqueueJob({ type: 'noop', delaySeconds: 1 });
      await s.waitStatus(warm.id, 'succeeded', { timeout: 20000 });

      // kill scheduler 0, then (after a third starts) scheduler 1: whichever led, a leader
      // dies at least once, and delayed jobs must still run afterwards each time
      for (const [victim, spare] of [[0, true], [1, false]]) {
        if (spare) s.startScheduler();
        await s.killScheduler(victim, 'SIGKILL');
        const ids = await s.enqueueMany(10, { type: 'noop', delaySeconds: 1 });
        const jobs = await s.waitAll(ids, 'succeeded', { timeout: 20000 });
        for (const j of jobs) assert.equal(j.attempt, 1);
      }

      // lease recovery also moved: a killed worker's job is reclaimed and re-run
      const job = await s.enqueueJob({ type: 'sleep', input: { ms: 2000 } });
      await s.waitStatus(job.id, 'running');
      await s.killWorker(0, 'SIGKILL');
      s.startWorker();
      const done = await s.waitStatus(job.id, 'succeeded', { timeout: 20000 });
      assert.equal(done.attempt, 2);
      assert.equal(done.attempts[0].error.code, 'LEASE_EXPIRED');
    }));

test('conveyor migrate waits for another migrate holding the lock, past the statement timeout',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    // another host's migrate: holds the migration lock for 3 s
    const other = spawn('psql', [process.env.CONVEYOR_DATABASE_URL, '-X', '-q',
      '-c', 'SELECT pg_advisory_lock(7165066986957401970)', '-c', 'SELECT pg_sleep(3)'],
    { stdio: 'ignore' });
    const exited = new Promise((resolve) => other.on('exit', resolve));
    try {
      await waitFor(async () => Number(await s.psql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")) > 0,
      { timeout: 10000, what: 'the other migrate holds the lock' });
      const t0 = Date.now();
      const r = await s.cli(['migrate'], { env: { CONVEYOR_PG_STATEMENT_TIMEOUT_MS: '1000' } });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(Date.now() - t0 >= 1000, 'it waited for the lock, longer than the timeout');
    } finally {
      other.kill();
      await exited;
    }
  }));
