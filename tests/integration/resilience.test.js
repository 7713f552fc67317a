'use strict';
// Redis going away and coming back: /readyz says so meanwhile, every process reconnects.
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, waitFor, assertError } = require('./lib/stack');

test('Redis restart: /readyz reports it down, then api, worker and scheduler reconnect',
  { timeout: 90000 }, () => withStack({ privateRedis: true }, async (s) => {
    const before = await s.enqueueJob({ type: 'noop' });
    await s.waitStatus(before.id, 'succeeded');

    await s.stopRedis();
    const ready = await waitFor(async () => {
      const r = await s.api('GET', '/readyz', { token: null });
      return r.status !== 200 && r;
    }, { timeout: 10000, what: '/readyz to report Redis down' });
    assert.equal(ready.status, 503, ready.text);
    assert.notEqual(ready.json && ready.json.status, 'ready', ready.text);
    assert.equal((await s.api('GET', '/healthz', { token: null })).status, 200, 'still alive');
    const refused = await s.api('POST', '/v1/jobs', { body: { type: 'noop' } });
    assertError(assert, refused, 503, 'SERVICE_UNAVAILABLE');

    await s.startRedis(); // empty: the old data is gone with it
    await waitFor(async () => (await s.api('GET', '/readyz', { token: null })).status === 200,
      { timeout: 15000, what: '/readyz back to 200' });
    const after = await s.enqueueJob({ type: 'noop' });
    await s.waitStatus(after.id, 'succeeded', { timeout: 20000 }); // the worker reconnected
    const delayed = await s.enqueueJob({ type: 'noop', delaySeconds: 1 });
    await s.waitStatus(delayed.id, 'succeeded', { timeout: 20000 }); // the scheduler too
    for (const p of s.procs.filter((x) => x.name !== 'redis')) {
      assert.ok(p.alive, `${p.name} survived the outage`);
    }
  }));

test('Redis busy with a long script when a job ends: the worker keeps the outcome, sends it again once Redis answers; the job runs once',
  { timeout: 90000 }, () => withStack({ privateRedis: true, env: { CONVEYOR_LEASE_MS: '10000' } },
    async (s) => {
      await s.redis('CONFIG', 'SET', 'busy-reply-threshold', '100'); // -BUSY after 100 ms
      const job = await s.enqueueJob({ type: 'sleep', input: { ms: 700 } });
      await s.waitStatus(job.id, 'running');
      // Redis busy for 2.5 s: every other command gets -BUSY meanwhile, the sleep's outcome too
      await s.redis('EVAL', `local t = redis.call('TIME')
local t0 = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - t0 > 2500000
return 1`, '0');
      const done = await s.waitStatus(job.id, ['succeeded', 'failed', 'dead'], { timeout: 20000 });
      assert.equal(done.status, 'succeeded');
      assert.equal(done.attempt, 1, 'one run: its outcome was recorded, its lease did not expire');
      assert.deepEqual(done.attempts || [], [], 'no failed attempt');
      const worker = s.procs.find((p) => p.name.startsWith('worker'));
      assert.match(worker.log(), /refused outcomes for now \(BUSY/, 'the outcome met -BUSY');
      for (const p of s.procs.filter((x) => x.name !== 'redis')) {
        assert.ok(p.alive, `${p.name} survived the busy Redis`);
      }
    }));

test('a wrong Redis password: the api says Redis is down (/readyz 503, POST 503), the worker says AUTH was refused, neither logs a password',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const url = new URL(process.env.CONVEYOR_REDIS_URL);
    const wrong = 'not-the-password-0123456789';
    const env = { CONVEYOR_REDIS_URL: `redis://:${wrong}@${url.hostname}:${url.port}` };
    const api = await s.startExtraApi(env);
    const ready = await api.api('GET', '/readyz', { token: null });
    assert.equal(ready.status, 503, ready.text);
    assertError(assert, await api.api('POST', '/v1/jobs', { body: { type: 'noop' } }), 503,
      'SERVICE_UNAVAILABLE');
    const worker = s.workers[s.startWorker(env)];
    await waitFor(() => /AUTH refused/.test(worker.log()), { timeout: 10000, what: 'the worker\'s AUTH refused line' });
    for (const p of [api.proc, worker]) {
      assert.ok(!p.log().includes(wrong), `${p.name} logs no password`);
      if (url.password) assert.ok(!p.log().includes(url.password), `${p.name} logs no password`);
    }
  }));
