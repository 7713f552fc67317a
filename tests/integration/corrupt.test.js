'use strict';
// Corrupt job records in Redis: dead-lettered with a reason; the worker lives on.
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack } = require('./lib/stack');

// msgpack: array32 declaring 4 billion elements in 6 bytes (an unpacker that allocates
// from the declared count asks for tens of GB).
const HUGE_ARRAY = Buffer.from([0x91, 0xdd, 0xff, 0xff, 0xff, 0xff]);
const TEXT = Buffer.from('this is not msgpack at all { "type": "noop" }');
const EMPTY_MAP = Buffer.from([0x80]); // well-formed msgpack, no required field
const TRUNCATED_STR = Buffer.from([0x81, 0xa2, 0x69, 0x64, 0xdb, 0x7f, 0xff, 0xff, 0xff]);

test('corrupt records → dead with CORRUPT_RECORD and a reason; the worker keeps working',
  { timeout: 60000 }, () => withStack({ workers: 0 }, async (s) => {
    const bad = [HUGE_ARRAY, TEXT, EMPTY_MAP, TRUNCATED_STR];
    const ids = await s.enqueueMany(bad.length, { type: 'noop' }, { parallel: 1 });
    for (const [i, id] of ids.entries()) {
      await s.redisWithInput(bad[i], 'HSET', s.jobKey(id), 'rec');
      assert.equal(await s.redis('HSTRLEN', s.jobKey(id), 'rec'), String(bad[i].length));
    }
    // and one whose hash vanished while its id waits in the ready set
    const gone = (await s.enqueueJob({ type: 'noop' })).id;
    await s.redis('DEL', s.jobKey(gone));

    s.startWorker();
    for (const id of ids) {
      const j = await s.waitStatus(id, 'dead');
      assert.equal(j.error && j.error.code, 'CORRUPT_RECORD', `${id}: ${JSON.stringify(j)}`);
      assert.equal(typeof j.error.message, 'string');
      assert.ok(j.error.message.length > 5, `a reason is given: ${j.error.message}`);
      assert.equal(j.error.retryable, false);
    }
    const g = await s.waitStatus(gone, 'dead');
    assert.equal(g.error.code, 'CORRUPT_RECORD');

    // the same worker process is alive and runs a normal job
    const ok = await s.enqueueJob({ type: 'noop' });
    await s.waitStatus(ok.id, 'succeeded');
    assert.ok(s.workers[0].alive, 'worker 0 still running');
    assert.equal(await s.redis('ZCARD', s.queueKey('default', 'working')), '0');
    assert.equal((await s.queueStats()).dead, bad.length + 1);
  }));
