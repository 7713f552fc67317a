'use strict';
// 10,000 noop jobs over 3 worker processes: every one succeeds, each exactly once.
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, waitFor } = require('./lib/stack');

const N = 10000;

// For each job id: "status attempt worker" (one line per job).
const STATE_LUA = `local out = {}
for i = 2, #ARGV do
  local v = redis.call('HMGET', ARGV[1] .. ARGV[i], 'status', 'attempt', 'worker')
  out[#out + 1] = tostring(v[1]) .. ' ' .. tostring(v[2]) .. ' ' .. tostring(v[3])
end
return out`;

test(`${N} noop jobs over 3 workers → exactly ${N} succeeded, each run once`,
  { timeout: 150000 }, () => withStack({ workers: 3, env: { CONVEYOR_API_THREADS: '64' } },
    async (s) => {
      const ids = await s.enqueueMany(N, { type: 'noop' }, { parallel: 50 });
      assert.equal(new Set(ids).size, N, 'distinct ids');

      let last;
      await waitFor(async () => {
        last = await s.queueStats();
        return last && last.processed >= N && last.ready === 0 && last.running === 0;
      }, { timeout: 120000, interval: 250, what: `${N} processed` }).catch((err) => {
        err.message += ` — stats: ${JSON.stringify(last)}`;
        throw err;
      });
      assert.equal(last.processed, N, 'processed counts each job once');
      assert.equal(last.failed, 0);
      assert.equal(last.dead, 0);
      assert.equal(last.retried, 0);

      const states = await s.evalOverIds(STATE_LUA, ids);
      assert.equal(states.length, N);
      const tally = {};
      const byWorker = {};
      for (const line of states) {
        const [status, attempt, worker] = line.split(' ');
        tally[`${status} ${attempt}`] = (tally[`${status} ${attempt}`] || 0) + 1;
        byWorker[worker] = (byWorker[worker] || 0) + 1;
      }
      assert.deepEqual(tally, { 'succeeded 1': N }, 'every job succeeded on attempt 1');
      assert.equal(await s.redis('ZCARD', s.queueKey('default', 'working')), '0');
      assert.equal(await s.redis('ZCARD', s.queueKey('default', 'ready')), '0');

      // all three workers did a share of the work (none stuck), and all still run
      assert.equal(Object.keys(byWorker).length, 3, `jobs per worker: ${JSON.stringify(byWorker)}`);
      for (const [i, w] of s.workers.entries()) assert.ok(w.alive, `worker ${i} alive`);

      // the API agrees for a sample
      for (const id of [ids[0], ids[N >> 1], ids[N - 1]]) {
        const j = await s.job(id);
        assert.equal(j.status, 'succeeded');
        assert.equal(j.attempt, 1);
      }
    }));
