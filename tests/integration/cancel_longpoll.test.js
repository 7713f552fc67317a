'use strict';
// DELETE /v1/jobs/{id} (queued, scheduled, running, terminal) and GET ?wait=N.
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, assertError, sleep } = require('./lib/stack');

test('cancel a queued job (no worker): 200 canceled, and it never runs once a worker starts',
  { timeout: 60000 }, () => withStack({ workers: 0 }, async (s) => {
    const job = await s.enqueueJob({ type: 'noop' });
    assert.equal(job.status, 'queued');
    const scheduled = await s.enqueueJob({ type: 'noop', delaySeconds: 1 });
    assert.equal(scheduled.status, 'scheduled');

    for (const j of [job, scheduled]) {
      const r = await s.api('DELETE', `/v1/jobs/${j.id}`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.id, j.id);
      assert.equal(r.json.status, 'canceled');
      assert.ok(r.json.finishedAt, 'finishedAt set');
    }
    assertError(assert, await s.api('DELETE', `/v1/jobs/${job.id}`), 409, 'CONFLICT');
    assertError(assert, await s.api('DELETE', '/v1/jobs/job_0000000000000000000000'),
      404, 'NOT_FOUND');
    assert.equal(await s.redis('ZCARD', s.queueKey('default', 'ready')), '0', 'ready is empty');

    // a worker starts; a job enqueued after the canceled ones runs, proving the worker
    // went past them; and the delayed one's time passes too
    s.startWorker();
    const marker = await s.enqueueJob({ type: 'noop', delaySeconds: 1 });
    await s.waitStatus(marker.id, 'succeeded', { timeout: 20000 });
    for (const j of [job, scheduled]) {
      const after = await s.job(j.id);
      assert.equal(after.status, 'canceled');
      assert.equal(after.attempt, 0, 'never ran');
      assert.equal(after.startedAt, null);
      assert.equal(after.result, null);
    }
    const q = await s.queueStats();
    assert.equal(q.processed, 1, 'only the marker ran');
    assert.equal(q.canceled, 2);
  }));

test('cancel a running sleep {"ms":60000}: 202 cancelRequested, then canceled',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'sleep', input: { ms: 60000 } });
    await s.waitStatus(job.id, 'running');
    const r = await s.api('DELETE', `/v1/jobs/${job.id}`);
    assert.equal(r.status, 202, r.text);
    assert.equal(r.json.id, job.id);
    assert.equal(r.json.cancelRequested, true);
    const done = await s.waitStatus(job.id, 'canceled', { timeout: 20000 });
    assert.equal(done.result, null, 'the sleep did not complete');
    assert.equal(done.attempt, 1);
    assert.ok(done.finishedAt);
    assertError(assert, await s.api('DELETE', `/v1/jobs/${job.id}`), 409, 'CONFLICT');
    // the worker is free again: the next job runs
    const next = await s.enqueueJob({ type: 'noop' });
    await s.waitStatus(next.id, 'succeeded');
    assert.equal(await s.redis('ZCARD', s.queueKey('default', 'working')), '0');
  }));

test('long-poll: ?wait=10 answers when the job finishes; ?wait=1 answers with the current state',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'sleep', input: { ms: 1500 } });
    let t0 = Date.now();
    let r = await s.api('GET', `/v1/jobs/${job.id}?wait=10`);
    let took = Date.now() - t0;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.status, 'succeeded', 'answered with the finished job');
    assert.deepEqual(r.json.result, { sleptMs: 1500 });
    assert.ok(took < 8000, `answered after ${took} ms: it should answer when the job ends`);

    // terminal already: answers at once with the same JSON
    r = await s.api('GET', `/v1/jobs/${job.id}?wait=10`);
    assert.equal(r.json.status, 'succeeded');

    const long = await s.enqueueJob({ type: 'sleep', input: { ms: 60000 } });
    t0 = Date.now();
    r = await s.api('GET', `/v1/jobs/${long.id}?wait=1`);
    took = Date.now() - t0;
    assert.equal(r.status, 200, r.text);
    assert.ok(['queued', 'running'].includes(r.json.status), r.json.status);
    assert.ok(took >= 900, `?wait=1 answered after ${took} ms: it should have waited`);

    // several waiters on one job all hear about its end (cancel it to end it)
    await s.waitStatus(long.id, 'running');
    const waiters = Array.from({ length: 5 }, () =>
      s.api('GET', `/api/v1/jobs/${long.id}?wait=15`, { timeoutMs: 20000 }));
    const del = await s.api('DELETE', `/v1/jobs/${long.id}`);
    assert.equal(del.status, 202, del.text);
    for (const w of await Promise.all(waiters)) {
      assert.equal(w.status, 200, w.text);
      assert.equal(w.json.status, 'canceled');
    }
  }));

test('long-poll cap: 40 waiters at once all get an answer and the api keeps serving others',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'sleep', input: { ms: 60000 } });
    await s.waitStatus(job.id, 'running');
    let waitersDone = 0;
    const waiters = Array.from({ length: 40 }, () =>
      s.api('GET', `/v1/jobs/${job.id}?wait=4`, { timeoutMs: 20000 }).then((r) => {
        waitersDone++;
        return r;
      }));
    await sleep(300); // let them reach the api and take their threads
    const h = await s.api('GET', '/healthz', { token: null });
    assert.equal(h.status, 200);
    const other = await s.enqueueJob({ type: 'noop' });
    assert.ok(other.id);
    const g = await s.api('GET', `/v1/jobs/${job.id}`);
    assert.equal(g.status, 200);
    assert.ok(waitersDone < 40, 'the other requests were served while waiters were waiting');
    for (const w of await Promise.all(waiters)) {
      assert.equal(w.status, 200, w.text);
      assert.equal(w.json.status, 'running');
    }
    assert.equal((await s.api('DELETE', `/v1/jobs/${job.id}`)).status, 202);
    await s.waitStatus(job.id, 'canceled');
  }));
