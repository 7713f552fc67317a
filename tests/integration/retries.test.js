'use strict';
// Retries with backoff, non-retryable failures, dead jobs, manual retry, timeouts.
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, waitFor, assertError } = require('./lib/stack');

function assertHistory(job, expected) {
  assert.ok(Array.isArray(job.attempts), 'attempts is an array');
  assert.equal(job.attempts.length, expected.length,
    `attempts history: ${JSON.stringify(job.attempts)}`);
  expected.forEach(([attempt, code], i) => {
    const h = job.attempts[i];
    assert.equal(h.attempt, attempt, `attempts[${i}].attempt`);
    assert.equal(h.error && h.error.code, code, `attempts[${i}].error.code`);
    assert.ok(h.at !== undefined && h.at !== null, `attempts[${i}].at`);
  });
}

test('fail {"times":2} is retried and succeeds on attempt 3 with two failures recorded',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'fail', input: { times: 2 } });
    const done = await s.waitStatus(job.id, 'succeeded');
    assert.equal(done.attempt, 3);
    assert.deepEqual(done.result, { attempts: 3 });
    assert.equal(done.error, null, 'no error once it succeeded');
    assertHistory(done, [[1, 'INJECTED_FAILURE'], [2, 'INJECTED_FAILURE']]);
    const q = await s.queueStats();
    assert.equal(q.processed, 1);
    assert.equal(q.retried, 2);
  }));

test('fail {"retryable":false} fails at once: status failed after one attempt',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'fail', input: { times: 3, retryable: false },
      maxAttempts: 5 });
    const done = await s.waitStatus(job.id, 'failed');
    assert.equal(done.attempt, 1);
    assert.equal(done.error.code, 'INJECTED_FAILURE');
    assert.equal(done.error.retryable, false);
    assert.equal(done.result, null);
    assertHistory(done, [[1, 'INJECTED_FAILURE']]);
  }));

test('attempts exhausted → dead; manual retry runs it again (history grows); 409/404 otherwise',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'fail', input: { times: 1 }, maxAttempts: 1 });
    const dead = await s.waitStatus(job.id, 'dead');
    assert.equal(dead.attempt, 1);
    assert.equal(dead.error.code, 'INJECTED_FAILURE');
    assertHistory(dead, [[1, 'INJECTED_FAILURE']]);
    assert.equal((await s.queueStats()).dead, 1, 'the queue counts one dead job');

    // no worker while retrying, so that the 202 shows the re-queued state
    assert.deepEqual(await s.killWorker(0, 'SIGTERM'), { code: 0, signal: null });
    const r = await s.api('POST', `/v1/jobs/${job.id}/retry`);
    assert.equal(r.status, 202, r.text);
    assert.equal(r.json.id, job.id);
    assert.equal(r.json.status, 'queued');
    assert.equal(r.json.attempt, 0, 'retry resets the attempt counter');
    assert.equal(r.headers.location, `/v1/jobs/${job.id}`);
    s.startWorker();
    // attempt 1 fails again (times: 1) and it has one attempt: dead again
    const again = await s.waitStatus(job.id, 'dead');
    assert.equal(again.attempt, 1);
    assertHistory(again, [[1, 'INJECTED_FAILURE'], [1, 'INJECTED_FAILURE']]);

    const ok = await s.enqueueJob({ type: 'noop' });
    await s.waitStatus(ok.id, 'succeeded');
    assertError(assert, await s.api('POST', `/v1/jobs/${ok.id}/retry`), 409, 'CONFLICT');
    assertError(assert, await s.api('POST', '/v1/jobs/job_0000000000000000000000/retry'),
      404, 'NOT_FOUND');
  }));

test('a lost lease is forgiven once: kill -9 (maxAttempts 1) → runs again on another worker; killed again → dead (LEASE_EXPIRED) → manual retry → succeeded',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'sleep', input: { ms: 3000 }, maxAttempts: 1 });
    await s.waitStatus(job.id, 'running');
    await s.killWorker(0, 'SIGKILL');
    s.startWorker();
    // reclaimed after the lease, and run again although its one attempt was taken: the
    // worker may have died before it started the job
    const second = await waitFor(async () => {
      const j = await s.job(job.id);
      return j.status === 'running' && j.attempt === 2 && j;
    }, { timeout: 20000, what: 'attempt 2 running on the new worker' });
    assertHistory(second, [[1, 'LEASE_EXPIRED']]);
    await s.killWorker(1, 'SIGKILL');
    const dead = await s.waitStatus(job.id, 'dead', { timeout: 20000 });
    assert.equal(dead.error.code, 'LEASE_EXPIRED');
    assertHistory(dead, [[1, 'LEASE_EXPIRED'], [2, 'LEASE_EXPIRED']]);
    assert.equal(await s.redis('ZSCORE', s.queueKey('default', 'working'), job.id), '',
      'not in the working set any more');

    const r = await s.api('POST', `/v1/jobs/${job.id}/retry`);
    assert.equal(r.status, 202, r.text);
    assert.equal(r.json.status, 'queued');
    assert.equal(r.json.attempt, 0);
    s.startWorker();
    const done = await s.waitStatus(job.id, 'succeeded', { timeout: 20000 });
    assert.equal(done.attempt, 1);
    assert.deepEqual(done.result, { sleptMs: 3000 });
    assert.equal(done.error, null);
  }));

test('timeoutSeconds: an attempt running past its timeout fails (no result)',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'sleep', input: { ms: 10000 }, timeoutSeconds: 1,
      maxAttempts: 1 });
    const done = await s.waitStatus(job.id, ['dead', 'failed'], { timeout: 20000 });
    assert.equal(done.result, null, 'the sleep did not complete');
    assert.equal(done.attempt, 1);
    assert.equal(typeof done.error.code, 'string');
    assert.equal(done.attempts.length, 1);
  }));
