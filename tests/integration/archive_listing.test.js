'use strict';
// The PostgreSQL archive (GET after a job expired from Redis) and GET /v1/jobs listings.
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, waitFor, sleep } = require('./lib/stack');

const RETAIN_1S = { CONVEYOR_RETENTION_SECONDS: '1', CONVEYOR_DEAD_RETENTION_SECONDS: '1' };

// Waits until the job is in the archive table and gone from Redis.
async function waitArchivedAndExpired(s, id) {
  await waitFor(async () => (await s.psql(
    `SELECT status FROM "${s.schema}".jobs WHERE id = '${id}'`)) !== '',
  { timeout: 15000, what: `${id} archived to PostgreSQL` });
  await waitFor(async () => (await s.redis('EXISTS', s.jobKey(id))) === '0',
    { timeout: 15000, what: `${id} expired from Redis` });
}

test('archive: a finished job expires from Redis and GET answers the same JSON from PostgreSQL',
  { timeout: 60000 }, () => withStack({ env: RETAIN_1S }, async (s) => {
    const ok = await s.enqueueJob({ type: 'sleep', input: { ms: 10 } },
      { headers: { 'Idempotency-Key': 'archive-me' } });
    const dead = await s.enqueueJob({ type: 'fail', input: { times: 1 }, maxAttempts: 1,
      priority: 2 });
    const live = {
      [ok.id]: await s.waitStatus(ok.id, 'succeeded'),
      [dead.id]: await s.waitStatus(dead.id, 'dead'),
    };
    for (const id of Object.keys(live)) {
      await waitArchivedAndExpired(s, id);
      const r = await s.api('GET', `/v1/jobs/${id}`);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json, live[id], 'the archive answers the same JSON');
    }
    assert.equal(await s.psql(`SELECT status || ' ' || attempt FROM "${s.schema}".jobs
      WHERE id = '${dead.id}'`), 'dead 1');

    const { items } = await s.listAll();
    assert.deepEqual(items.map((j) => j.id).sort(), [ok.id, dead.id].sort(),
      'archived jobs are still listed, once each');
    const succ = await s.listAll('status=succeeded');
    assert.deepEqual(succ.items.map((j) => j.id), [ok.id]);
    assert.deepEqual(succ.items[0], live[ok.id]);
    assert.equal(await s.redis('ZCARD', s.key('done')), '0', 'nothing left to archive');
  }));

test('archive: a running job canceled, archived and expired answers the same JSON (cancelRequested kept)',
  { timeout: 60000 }, () => withStack({ env: RETAIN_1S }, async (s) => {
    const job = await s.enqueueJob({ type: 'sleep', input: { ms: 5000 } });
    await s.waitStatus(job.id, 'running');
    assert.equal((await s.api('DELETE', `/v1/jobs/${job.id}`)).status, 202, 'cancel requested');
    const live = await s.waitStatus(job.id, 'canceled');
    assert.equal(live.cancelRequested, true);
    await waitArchivedAndExpired(s, job.id);
    const r = await s.api('GET', `/v1/jobs/${job.id}`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, live, 'the archive answers the same JSON');
    const { items } = await s.listAll();
    assert.deepEqual(items, [live], 'and lists it the same');
  }));

test('archive: an archived dead job can still be retried by hand',
  { timeout: 60000 }, () => withStack({ env: RETAIN_1S }, async (s) => {
    const job = await s.enqueueJob({ type: 'fail', input: { times: 1 }, maxAttempts: 1 },
      { headers: { 'Idempotency-Key': 'retry-archived' } });
    const dead = await s.waitStatus(job.id, 'dead');
    await waitArchivedAndExpired(s, job.id);
    // no worker while retrying, so that the 202 shows the re-queued state
    assert.deepEqual(await s.killWorker(0, 'SIGTERM'), { code: 0, signal: null });
    const r = await s.api('POST', `/v1/jobs/${job.id}/retry`);
    assert.equal(r.status, 202, r.text);
    assert.equal(r.json.status, 'queued');
    assert.equal(r.json.attempt, 0);
    s.startWorker();
    const again = await s.waitStatus(job.id, 'dead');
    // the same job as before, run again (as a retry of a job still in Redis would be)
    assert.equal(again.createdAt, dead.createdAt, 'createdAt kept');
    assert.equal(again.idempotencyKey, 'retry-archived', 'idempotencyKey kept');
    assert.equal(again.attempts.length, 2,
      `history kept and grown: ${JSON.stringify(again.attempts)}`);
    assert.deepEqual(again.attempts[0], dead.attempts[0]);
    const { items } = await s.listAll();
    assert.deepEqual(items.map((j) => j.id), [job.id], 'listed once');
    assert.equal(items[0].status, 'dead');
  }));

test('listing with a status filter reads past archive rows of jobs retried since: 50 dead archived, 41 retried, status=dead lists the 9 others (pages of 1, 5, 20)',
  { timeout: 90000 }, () => withStack({ env: RETAIN_1S }, async (s) => {
    const ids = [];
    for (let i = 0; i < 50; i++) {
      ids.push((await s.enqueueJob({ type: 'fail', input: { times: 1 }, maxAttempts: 1 })).id);
      await sleep(2); // distinct creation times: a fixed order
    }
    await s.waitAll(ids, 'dead');
    for (const id of ids) await waitArchivedAndExpired(s, id);
    assert.deepEqual(await s.killWorker(0, 'SIGTERM'), { code: 0, signal: null });
    // the 41 newest: queued again in Redis, dead in the archive; with pages of 1 that is
    // more than one listing reads (20 reads of 2 rows): a page comes back empty, with a cursor
    const retried = ids.slice(9);
    for (const id of retried) assert.equal((await s.api('POST', `/v1/jobs/${id}/retry`)).status, 202);
    for (const limit of [1, 5, 20]) {
      const { items, pages } = await s.listAll(`status=dead&limit=${limit}`);
      assert.deepEqual(items.map((j) => j.id), ids.slice(0, 9).reverse(),
        `pages of ${limit}: the 9 dead ones, newest first (${pages.length} pages)`);
      assert.ok(items.every((j) => j.status === 'dead'));
      if (limit === 1) {
        assert.ok(pages.some((p) => p.data.length === 0 && p.hasMore && p.nextCursor),
          'an empty page that goes on');
      }
    }
    const queued = await s.listAll('status=queued&limit=7');
    assert.deepEqual(queued.items.map((j) => j.id).sort(), [...retried].sort(), 'the 41 retried ones');
    const all = await s.listAll('limit=8');
    assert.equal(new Set(all.items.map((j) => j.id)).size, 50, 'each job once in the whole listing');
    assert.equal(all.items.length, 50);
  }));

test('sweep: an owner index whose 500 oldest entries are live jobs still loses the entries of expired jobs behind them',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const index = s.key('owner', 'u-sweep');
    // 600 entries from 1970 (far past the retention): the 500 oldest have a job record
    // (live: scheduled far ahead, say), the 100 newest none (expired, archived)
    await s.redis('EVAL', `for i = 1, 600 do
  local id = string.format('job_sweep%013d', i)
  redis.call('ZADD', KEYS[1], i, id)
  if i <= 500 then redis.call('HSET', ARGV[1] .. id, 'status', 'scheduled') end
end
return 1`, '1', index, s.key('job', ''));
    assert.equal(await s.redis('ZCARD', index), '600');
    s.startScheduler();
    await waitFor(async () => (await s.redis('ZCARD', index)) === '500',
      { timeout: 20000, what: 'the 100 entries of expired jobs swept' });
    assert.equal(await s.redis('ZSCORE', index, 'job_sweep0000000000500'), '500', 'live ones stay');
    assert.equal(await s.redis('ZSCORE', index, 'job_sweep0000000000501'), '', 'gone ones go');
  }));

test('listing: 256 jobs created in the same millisecond (one enqueue call), in pages of 100 and of 20, each once',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const r = await s.cli(['enqueue', 'noop', '{}', '--count', '256']);
    assert.equal(r.code, 0, r.stderr);
    for (const [limit, npages] of [[100, 3], [20, 13]]) {
      const { items, pages } = await s.listAll(`limit=${limit}`);
      assert.equal(new Set(items.map((j) => j.createdAt)).size, 1, 'one creation time for all');
      assert.equal(items.length, 256, `pages of ${limit}: listed ${items.length} of 256`);
      assert.equal(new Set(items.map((j) => j.id)).size, 256, 'each once');
      assert.equal(pages.length, npages);
    }
  }));

test('listing: 30 jobs in pages of 10 via cursor, newest first, each once; status and type filters',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const ids = [];
    for (let i = 0; i < 30; i++) {
      ids.push((await s.enqueueJob({ type: 'noop', input: { i } })).id);
      await sleep(2); // distinct creation times: the order is then fully determined
    }
    const canceled = [3, 7, 11, 20, 29].map((i) => ids[i]);
    for (const id of canceled) {
      assert.equal((await s.api('DELETE', `/v1/jobs/${id}`)).status, 200);
    }
    const newestFirst = [...ids].reverse();

    const { items, pages } = await s.listAll('limit=10');
    assert.equal(pages.length, 3, 'three pages');
    pages.forEach((p, i) => {
      assert.equal(p.data.length, 10, `page ${i} size`);
      assert.equal(p.hasMore, i < 2, `page ${i} hasMore`);
      if (i < 2) assert.equal(typeof p.nextCursor, 'string');
    });
    assert.deepEqual(items.map((j) => j.id), newestFirst, 'all 30, newest first, once each');
    assert.ok(items.every((j) => j.object === 'job' && j.type === 'noop'));
    assert.deepEqual(items.map((j) => j.input.i), newestFirst.map((_, k) => 29 - k));

    const c = await s.listAll('status=canceled&limit=2');
    assert.deepEqual(c.items.map((j) => j.id), [...canceled].reverse());
    assert.ok(c.items.every((j) => j.status === 'canceled'));
    const q = await s.listAll('status=queued&limit=7');
    assert.deepEqual(q.items.map((j) => j.id), newestFirst.filter((id) => !canceled.includes(id)));

    const sleeper = await s.enqueueJob({ type: 'sleep', input: { ms: 1 } });
    assert.deepEqual((await s.listAll('type=sleep')).items.map((j) => j.id), [sleeper.id]);
    assert.equal((await s.listAll('type=noop')).items.length, 30);
    assert.equal((await s.listAll('type=noop&status=canceled')).items.length, 5);
    const first = await s.api('GET', '/v1/jobs?limit=1');
    assert.equal(first.status, 200);
    assert.deepEqual(first.json.data.map((j) => j.id), [sleeper.id], 'newest first');
    assert.equal(first.json.hasMore, true);
  }));
