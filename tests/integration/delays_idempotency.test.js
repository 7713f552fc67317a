'use strict';
// Delayed jobs (delaySeconds, runAt) and Idempotency-Key.
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, assertError, sleep } = require('./lib/stack');

const ms = (t) => Date.parse(t);

test('delaySeconds 2: scheduled, still scheduled after 1 s, then runs (not before runAt)',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const job = await s.enqueueJob({ type: 'noop', delaySeconds: 2 });
    assert.equal(job.status, 'scheduled');
    const delay = ms(job.runAt) - ms(job.createdAt);
    assert.ok(delay >= 1500 && delay <= 2500, `runAt - createdAt = ${delay} ms`);
    assert.equal((await s.queueStats()).scheduled, 1, 'counted as scheduled');

    await sleep(1000); // well before its time: the worker and scheduler are running
    const early = await s.job(job.id);
    assert.equal(early.status, 'scheduled', 'not run before its time');
    assert.equal(early.attempt, 0);
    assert.equal(early.startedAt, null);

    const done = await s.waitStatus(job.id, 'succeeded', { timeout: 20000 });
    assert.equal(done.attempt, 1);
    assert.ok(ms(done.startedAt) >= ms(job.runAt),
      `started ${done.startedAt} before runAt ${job.runAt}`);
  }));

test('runAt: in the past runs at once; in the future waits for it',
  { timeout: 60000 }, () => withStack({}, async (s) => {
    const past = await s.enqueueJob({ type: 'noop',
      runAt: new Date(Date.now() - 60000).toISOString() });
    assert.ok(['queued', 'running', 'succeeded'].includes(past.status), past.status);
    await s.waitStatus(past.id, 'succeeded', { timeout: 20000 });

    const at = new Date(Date.now() + 1500);
    const future = await s.enqueueJob({ type: 'noop', runAt: at.toISOString() });
    assert.equal(future.status, 'scheduled');
    assert.equal(ms(future.runAt), at.getTime(), 'runAt kept to the millisecond');
    const done = await s.waitStatus(future.id, 'succeeded', { timeout: 20000 });
    assert.ok(ms(done.startedAt) >= at.getTime(), `started ${done.startedAt} before ${at}`);
  }));

test('Idempotency-Key: same key + body → same job (replayed); different body → 422 CONFLICT',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const key = `order-${Date.now()}`;
    const body = { type: 'sleep', input: { ms: 5 } };
    const first = await s.enqueue(body, { headers: { 'Idempotency-Key': key } });
    assert.notEqual(first.headers['idempotent-replayed'], 'true', 'first is not a replay');
    assert.equal(first.json.idempotencyKey, key);

    const second = await s.enqueue(body, { headers: { 'Idempotency-Key': key } });
    assert.equal(second.json.id, first.json.id, 'same job id');
    assert.equal(second.headers['idempotent-replayed'], 'true');
    assert.equal(second.headers.location, `/v1/jobs/${first.json.id}`);

    const conflict = await s.api('POST', '/v1/jobs', {
      body: { type: 'sleep', input: { ms: 6 } }, headers: { 'Idempotency-Key': key } });
    assertError(assert, conflict, 422, 'CONFLICT');

    const { items } = await s.listAll();
    assert.deepEqual(items.map((j) => j.id), [first.json.id], 'exactly one job exists');

    // the same body under another key is another job
    const other = await s.enqueue(body, { headers: { 'Idempotency-Key': `${key}-b` } });
    assert.notEqual(other.json.id, first.json.id);
    assert.equal((await s.listAll()).items.length, 2);
  }));

test('Idempotency-Key: 10 concurrent requests with one key create one job',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const key = `race-${Date.now()}`;
    const rs = await Promise.all(Array.from({ length: 10 }, () =>
      s.api('POST', '/v1/jobs', { body: { type: 'noop' }, headers: { 'Idempotency-Key': key } })));
    for (const r of rs) assert.equal(r.status, 202, r.text);
    const ids = new Set(rs.map((r) => r.json.id));
    assert.equal(ids.size, 1, `ids: ${[...ids].join(', ')}`);
    assert.equal(rs.filter((r) => r.headers['idempotent-replayed'] === 'true').length, 9,
      'nine replays');
    assert.equal((await s.listAll()).items.length, 1);
  }));

test('CONVEYOR_IDEMPOTENCY_TTL_SECONDS of a year: the key is kept a year (not cut to 24.8 days)',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0,
    env: { CONVEYOR_IDEMPOTENCY_TTL_SECONDS: '31536000' } }, async (s) => {
    const r = await s.enqueue({ type: 'noop' }, { headers: { 'Idempotency-Key': 'a-year' } });
    assert.equal(r.status, 202, r.text);
    const keys = (await s.redis('--scan', '--pattern', `${s.key('idem')}:*`)).split('\n').filter(Boolean);
    assert.equal(keys.length, 1, keys.join(' '));
    const pttl = Number(await s.redis('PTTL', keys[0]));
    assert.ok(pttl > 31536000000 - 60000 && pttl <= 31536000000, `PTTL ${pttl} ms`);
  }));
