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
