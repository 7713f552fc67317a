'use strict';
// Worker deaths: kill -9 (lease expiry, reclaim) and SIGTERM (graceful shutdown).
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, sleep, waitFor } = require('./lib/stack');

const sleepJob = (ms) => ({ type: 'sleep', input: { ms } });

test('kill -9 a worker holding 5 sleep jobs: another worker completes them after the lease',
  { timeout: 90000 }, () => withStack({}, async (s) => {
    const ids = await s.enqueueMany(5, sleepJob(3000));
    await s.waitAll(ids, 'running', { timeout: 20000 });
    assert.equal(await s.redis('ZCARD', s.queueKey('default', 'working')), '5', 'five leases');

    const exit = await s.killWorker(0, 'SIGKILL');
    assert.equal(exit.signal, 'SIGKILL');
    s.startWorker();
    const jobs = await s.waitAll(ids, 'succeeded', { timeout: 30000 });
    for (const j of jobs) {
      assert.equal(j.attempt, 2, `${j.id}: the second attempt completed it`);
      assert.deepEqual(j.result, { sleptMs: 3000 });
      assert.equal(j.attempts.length, 1, `${j.id} history: ${JSON.stringify(j.attempts)}`);
      assert.equal(j.attempts[0].attempt, 1);
      assert.equal(j.attempts[0].error.code, 'LEASE_EXPIRED');
    }
    const q = await s.queueStats();
    assert.equal(q.processed, 5, 'each completed once');
    assert.equal(q.running, 0);
    assert.equal(await s.redis('ZCARD', s.queueKey('default', 'working')), '0');
  }));

test('SIGTERM with a 300 ms shutdown deadline: unfinished jobs are handed back, none lost',
  { timeout: 90000 }, () => withStack({ env: { CONVEYOR_SHUTDOWN_TIMEOUT_MS: '300' } },
    async (s) => {
      const ids = await s.enqueueMany(20, sleepJob(1000));
      await s.waitAll(ids, 'running', { timeout: 20000 });
      const exit = await s.workers[0].signal('SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null }, 'the worker exits cleanly');

      // handed back at once (not left running until their leases expire)
      const after = await Promise.all(ids.map((id) => s.job(id)));
      const states = after.map((j) => j.status);
      assert.ok(states.every((st) => st === 'queued' || st === 'succeeded'),
        `after the worker exited: ${JSON.stringify(states)}`);
      assert.ok(states.includes('queued'), 'a 300 ms deadline cannot finish 1 s jobs');

      s.startWorker();
      const jobs = await s.waitAll(ids, 'succeeded', { timeout: 30000 });
      for (const j of jobs) {
        assert.equal(j.attempt, 1, `${j.id}: a handed-back attempt does not count`);
        assert.deepEqual(j.attempts, [], `${j.id}: no failure recorded`);
      }
      assert.equal((await s.queueStats()).processed, 20);
    }));

test('SIGTERM with a long deadline: in-flight jobs finish on the same worker, no new fetch',
  { timeout: 90000 }, () => withStack({ env: { CONVEYOR_SHUTDOWN_TIMEOUT_MS: '20000' } },
    async (s) => {
      const ids = await s.enqueueMany(5, sleepJob(1500));
      await s.waitAll(ids, 'running', { timeout: 20000 });
      const exited = s.workers[0].signal('SIGTERM');
      await sleep(300); // let the worker see the signal and stop fetching
      const late = await s.enqueueJob({ type: 'noop' });
      const exit = await exited;
      assert.deepEqual(exit, { code: 0, signal: null }, 'the worker exits cleanly');
      for (const id of ids) {
        const j = await s.job(id);
        assert.equal(j.status, 'succeeded', `${id} finished before the worker exited`);
        assert.equal(j.attempt, 1);
      }
      const lateJob = await s.job(late.id);
      assert.equal(lateJob.status, 'queued', 'a stopping worker takes no new job');
      s.startWorker();
      await s.waitStatus(late.id, 'succeeded');
    }));

test('fencing: a stalled worker (SIGSTOP) whose job was reclaimed cannot complete it',
  { timeout: 90000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob(sleepJob(3000));
    const first = await s.waitStatus(job.id, 'running');
    await s.workers[0].send('SIGSTOP'); // stalled: no heartbeat, no ack
    try {
      // its lease expires, the job is re-queued; another worker takes it (attempt 2)
      s.startWorker();
      const second = await waitFor(async () => {
        const j = await s.job(job.id);
        return j.status === 'running' && j.attempt === 2 && j;
      }, { timeout: 15000, what: 'attempt 2 running on worker 1' });
      assert.equal(second.attempts[0].error.code, 'LEASE_EXPIRED');
      // resume the stalled worker once its own 3 s sleep is overdue: it tries to ack at once
      const due = Date.parse(first.startedAt) + 3000;
      await sleep(Math.max(0, due - Date.now()));
    } finally {
      await s.workers[0].send('SIGCONT');
    }
    await sleep(500); // worker 0 acts on its overdue timer now; worker 1 needs ~2 s more
    const mid = await s.job(job.id);
    assert.equal(mid.status, 'running', `the stale ack was refused: ${JSON.stringify(mid)}`);
    assert.equal(mid.attempt, 2);

    const done = await s.waitStatus(job.id, 'succeeded', { timeout: 20000 });
    assert.equal(done.attempt, 2);
    assert.equal(done.startedAt, mid.startedAt, 'completed by the attempt-2 holder');
    assert.equal(done.attempts.length, 1);
    assert.equal((await s.queueStats()).processed, 1);
    assert.ok(s.workers[0].alive, 'the stalled worker survived being fenced out');
    // and it still works: give it a job of its own
    await s.killWorker(1, 'SIGTERM');
    const next = await s.enqueueJob({ type: 'noop' });
    await s.waitStatus(next.id, 'succeeded');
  }));

test('heartbeats: a job running for 3 leases keeps its lease (no reclaim, one attempt)',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    // CONVEYOR_LEASE_MS is 1500: the job outlives its first lease three times over
    const job = await s.enqueueJob(sleepJob(4500));
    const done = await s.waitStatus(job.id, 'succeeded', { timeout: 20000 });
    assert.equal(done.attempt, 1, 'not re-run');
    assert.deepEqual(done.attempts, [], 'no LEASE_EXPIRED');
    assert.deepEqual(done.result, { sleptMs: 4500 });
    assert.equal((await s.queueStats()).processed, 1);
  }));
