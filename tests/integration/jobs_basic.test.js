'use strict';
// Enqueue → run → succeeded, the job JSON, aliases, operations endpoints, priorities.
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, waitFor, sleep, ID_RE } = require('./lib/stack');

const RFC3339_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

function assertTime(v, what) {
  assert.equal(typeof v, 'string', `${what} should be a string, got ${v}`);
  assert.match(v, RFC3339_MS, what);
  assert.ok(!Number.isNaN(Date.parse(v)), `${what} parses`);
}

test('enqueue noop → 202 with Location, then succeeded with result {} on attempt 1',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const r = await s.enqueue({ type: 'noop' });
    const job = r.json;
    assert.match(job.id, ID_RE);
    assert.equal(r.headers.location, `/v1/jobs/${job.id}`);
    assert.match(r.headers['retry-after'] || '', /^\d+$/, 'Retry-After is delta-seconds');
    assert.ok(r.headers['x-request-id'], 'X-Request-Id');
    assert.match(r.headers['content-type'] || '', /^application\/json/);
    assert.equal(job.object, 'job');
    assert.equal(job.type, 'noop');
    assert.equal(job.queue, 'default');
    assert.ok(['queued', 'running', 'succeeded'].includes(job.status), job.status);
    assert.equal(job.priority, 5);
    assert.ok(Number.isInteger(job.maxAttempts) && job.maxAttempts >= 1, 'maxAttempts');
    assert.deepEqual(job.input, {});
    assert.equal(job.idempotencyKey, null);
    assert.equal(job.cancelRequested, false);
    assertTime(job.createdAt, 'createdAt');

    const done = await s.waitStatus(job.id, 'succeeded');
    assert.equal(done.id, job.id);
    assert.deepEqual(done.result, {});
    assert.equal(done.attempt, 1);
    assert.equal(done.error, null);
    assert.deepEqual(done.attempts, []);
    assert.equal(done.progress.percent, 100);
    assertTime(done.startedAt, 'startedAt');
    assertTime(done.finishedAt, 'finishedAt');
    assertTime(done.updatedAt, 'updatedAt');
    assert.ok(Date.parse(done.startedAt) >= Date.parse(done.createdAt), 'started after created');
    assert.ok(Date.parse(done.finishedAt) >= Date.parse(done.startedAt), 'finished after start');
    assert.equal(done.updatedAt, done.finishedAt, 'the last update of a finished job is its end');

    const q = await s.queueStats('default');
    assert.ok(q, 'GET /v1/queues lists "default"');
    assert.equal(q.processed, 1);
    assert.equal(q.ready, 0);
    assert.equal(q.running, 0);
    // the 202 body is the job as stored: same creation time as GET shows
    assert.equal(done.createdAt, job.createdAt, 'createdAt: POST body vs GET');
  }));

test('sleep job: input echoed, result {"sleptMs":N}; /api/v1 and /api aliases serve the job',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'sleep', input: { ms: 200 }, queue: 'q.alias-1',
      priority: 7, maxAttempts: 3 });
    assert.equal(job.queue, 'q.alias-1');
    assert.equal(job.priority, 7);
    assert.equal(job.maxAttempts, 3);
    assert.deepEqual(job.input, { ms: 200 });
    // the worker serves "default" only unless told otherwise: give it the queue
    s.startWorker({ CONVEYOR_QUEUES: 'q.alias-1' });
    const done = await s.waitStatus(job.id, 'succeeded');
    assert.deepEqual(done.result, { sleptMs: 200 });
    for (const prefix of ['/api/v1', '/api']) {
      const r = await s.api('GET', `${prefix}/jobs/${job.id}`);
      assert.equal(r.status, 200, `${prefix}/jobs/{id}: ${r.text}`);
      assert.deepEqual(r.json, done, `${prefix}/jobs/{id} answers the same JSON`);
    }
    const q = await s.queueStats('q.alias-1');
    assert.ok(q, 'queue q.alias-1 listed');
    assert.equal(q.processed, 1);
  }));

test('operations: /healthz, /readyz without auth; /v1/queues needs the token',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const h = await s.api('GET', '/healthz', { token: null });
    assert.equal(h.status, 200);
    assert.ok(h.headers['x-request-id']);
    const ready = await s.api('GET', '/readyz', { token: null });
    assert.equal(ready.status, 200, ready.text);
    assert.equal(ready.json.status, 'ready');
    const anon = await s.api('GET', '/v1/queues', { token: null });
    assert.equal(anon.status, 401, anon.text);
    const q = await s.api('GET', '/v1/queues');
    assert.equal(q.status, 200, q.text);
    assert.ok(Array.isArray(q.json.data));
  }));

test('priority: a priority-9 job runs before earlier priority-0 jobs',
  { timeout: 60000 }, () => withStack({ workers: 0 }, async (s) => {
    // 20 ms sleeps so that start times differ between consecutive jobs
    const body = (priority) => ({ type: 'sleep', input: { ms: 20 }, priority });
    const low = await s.enqueueMany(5, body(0), { parallel: 1 });
    const high = (await s.enqueueJob(body(9))).id;
    s.startWorker({ CONVEYOR_CONCURRENCY: '1' });
    const jobs = await s.waitAll([...low, high], 'succeeded');
    const started = (j) => Date.parse(j.startedAt);
    const hi = jobs.find((j) => j.id === high);
    for (const j of jobs.filter((x) => x.id !== high)) {
      assert.ok(started(hi) < started(j),
        `priority 9 started ${hi.startedAt}, a priority 0 job started ${j.startedAt}`);
    }
    // and the priority-0 jobs ran in FIFO order
    const lows = low.map((id) => jobs.find((j) => j.id === id));
    for (let i = 1; i < lows.length; i++) {
      assert.ok(started(lows[i - 1]) < started(lows[i]), 'FIFO within a priority');
    }
  }));

test('input round-trips exactly (unicode, numbers, nesting, ~900 KB)',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const input = {
      text: 'héllo wörld ✓ 日本語 🚀 "quoted" \\ back\nslash',
      ints: [0, -1, 2147483648, 9007199254740991],
      floats: [1.5, -0.25, 1e-7],
      flags: [true, false, null],
      nested: { a: { b: { c: [1, { d: 'e' }] } } },
      empty: { o: {}, a: [] },
    };
    const job = await s.enqueueJob({ type: 'noop', input });
    assert.deepEqual(job.input, input, 'POST answer');
    const done = await s.waitStatus(job.id, 'succeeded');
    assert.deepEqual(done.input, input, 'GET after the worker ran it');

    const big = { pad: 'x'.repeat(900 * 1024) };
    const bigJob = await s.enqueueJob({ type: 'noop', input: big });
    const bigDone = await s.waitStatus(bigJob.id, 'succeeded');
    assert.equal(bigDone.input.pad.length, big.pad.length);
    assert.deepEqual(bigDone.result, {});
  }));

test('CONVEYOR_CONCURRENCY=2: a worker never runs more than 2 jobs at once',
  { timeout: 60000 }, () => withStack({ workers: 0 }, async (s) => {
    const ids = await s.enqueueMany(6, { type: 'sleep', input: { ms: 400 } });
    s.startWorker({ CONVEYOR_CONCURRENCY: '2' });
    let most = 0;
    await waitFor(async () => {
      const jobs = await Promise.all(ids.map((id) => s.job(id)));
      most = Math.max(most, jobs.filter((j) => j.status === 'running').length);
      return jobs.every((j) => j.status === 'succeeded');
    }, { timeout: 20000, interval: 20, what: 'all 6 succeeded' });
    assert.equal(most, 2, `at most 2 running at a time, saw ${most}`);
    // the leases in Redis tell the same
    assert.equal(await s.redis('ZCARD', s.queueKey('default', 'working')), '0');
  }));

test('CONVEYOR_CONCURRENCY=4: a job that ends at once inside a fetched batch does not let the worker fetch past its concurrency',
  { timeout: 60000 }, () => withStack({ workers: 0 }, async (s) => {
    // The noop (priority 9) comes first in the worker's first batch and ends within it;
    // the rest of that batch must still count as taken slots.
    const quick = (await s.enqueueJob({ type: 'noop', input: {}, priority: 9 })).id;
    const slow = await s.enqueueMany(8, { type: 'sleep', input: { ms: 4000 }, priority: 5 },
      { parallel: 1 });
    s.startWorker({ CONVEYOR_CONCURRENCY: '4' });
    await s.waitStatus(quick, 'succeeded');
    let most = 0;
    const until = Date.now() + 2000; // within the first sleeps' 4 s
    while (Date.now() < until) {
      most = Math.max(most, Number(await s.redis('ZCARD', s.queueKey('default', 'working'))));
      await sleep(20);
    }
    assert.equal(most, 4, `at most 4 leased at a time, saw ${most}`);
    const running = (await Promise.all(slow.map((id) => s.job(id))))
      .filter((j) => j.status === 'running').length;
    assert.equal(running, 4, `4 sleeps running, saw ${running}`);
    await s.waitAll(slow, 'succeeded', { timeout: 30000 });
  }));

test('weighted queues: a busy queue does not starve another (both served as they fill)',
  { timeout: 120000 }, () => withStack({ workers: 0 }, async (s) => {
    const big = await s.enqueueMany(2000, { type: 'noop', queue: 'big' }, { parallel: 40 });
    const small = await s.enqueueMany(100, { type: 'noop', queue: 'small' }, { parallel: 20 });
    // fast jobs keep fetches outstanding all the time: each must still pick its queue
    // by weight, not stay on the one it found busy
    s.startWorker({ CONVEYOR_QUEUES: 'big:3,small:1', CONVEYOR_CONCURRENCY: '10' });
    const done = await s.waitAll([...big, ...small], 'succeeded', { timeout: 90000 });
    const started = (j) => Date.parse(j.startedAt);
    const lastSmall = Math.max(...done.filter((j) => j.queue === 'small').map(started));
    const bigBefore = done.filter((j) => j.queue === 'big' && started(j) < lastSmall).length;
    assert.ok(bigBefore < 1500, `${bigBefore} of the 2000 jobs of "big" started before the ` +
      'last of the 100 of "small": it waited for "big" to drain');
  }));

test('queues: a worker serves only its CONVEYOR_QUEUES; weighted queues are all served',
  { timeout: 60000 }, () => withStack({ workers: 0 }, async (s) => {
    const hi = await s.enqueueMany(6, { type: 'noop', queue: 'hi' }, { parallel: 3 });
    const lo = await s.enqueueMany(6, { type: 'noop', queue: 'lo' }, { parallel: 3 });
    s.startWorker({ CONVEYOR_QUEUES: 'hi' });
    await s.waitAll(hi, 'succeeded');
    for (const id of lo) {
      assert.equal((await s.job(id)).status, 'queued', `${id} of queue lo ran on a hi-only worker`);
    }
    s.startWorker({ CONVEYOR_QUEUES: 'hi:3,lo:1' });
    const jobs = await s.waitAll(lo, 'succeeded');
    for (const j of jobs) assert.equal(j.queue, 'lo');
  }));

test('conveyor enqueue checks its arguments as POST /v1/jobs does: a bad one → exit 2 with the reason, nothing enqueued',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const bad = [
      [['noop', '{}', '--priority', 'abc'], /--priority needs an integer/],
      [['noop', '{}', '--priority', '12'], /priority/],
      [['noop', '{}', '--delay', 'soon'], /--delay needs a number/],
      [['noop', '{}', '--delay', '1e300'], /delaySeconds must be a number from 0 to/],
      [['noop', '{}', '--max-attempts', '2000000000'], /maxAttempts/],
      [['noop', '{}', '--max-attempts', '1.5'], /--max-attempts needs an integer/],
      [['nosuch', '{}'], /unknown job type 'nosuch'/],
      [['sleep', '{"ms":"x"}'], /input\.ms/],
      [['noop', '{}', '--queue', 'bad queue'], /queue must be/],
      [['noop', '[1]'], /a JSON object as input/],
    ];
    for (const [args, why] of bad) {
      const r = await s.cli(['enqueue', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, why, args.join(' '));
    }
    assert.equal((await s.listAll()).items.length, 0, 'nothing enqueued');

    const ok = await s.cli(['enqueue', 'sleep', '{"ms":5}', '--priority', '7', '--max-attempts', '4',
      '--queue', 'cli-q', '--delay', '120']);
    assert.equal(ok.code, 0, ok.stderr);
    const job = await s.job(ok.stdout.trim());
    assert.equal(job.status, 'scheduled');
    assert.equal(job.priority, 7);
    assert.equal(job.maxAttempts, 4);
    assert.equal(job.queue, 'cli-q');
    assert.deepEqual(job.input, { ms: 5 });
    const ahead = Date.parse(job.runAt) - Date.parse(job.createdAt);
    assert.ok(ahead >= 119000 && ahead <= 121000, `runAt ${ahead} ms after creation`);
  }));
