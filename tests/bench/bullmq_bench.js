// tests/bench/bullmq_bench.js — the BullMQ references of `make bench` (ops/bench.sh).
//
//   node bullmq_bench.js            (settings from the environment, below)
//
// BENCH_MODE=noop (figure a): preloads BENCH_JOBS jobs with Queue.addBulk (chunks of
// 1,000), then starts one Worker with BENCH_CONCURRENCY and processor `async () => {}`
// and times from the Worker's creation until it has emitted BENCH_JOBS 'completed'
// events. Jobs keep BullMQ's default removeOnComplete (completed jobs are kept), as
// Conveyor keeps its finished jobs until the scheduler archives them. Prints:
//   BULLMQ jobs=N concurrency=C preload_s=S seconds=S rate=R cpu_s=S redis_cpu_s=S
// (cpu_s: this process's CPU time, redis_cpu_s: redis-server's, both over `seconds`).
// With BENCH_COMMANDSTATS=FILE, Redis's INFO commandstats over `seconds` goes to FILE.
//
// BENCH_MODE=rss (figure d): one Worker with BENCH_CONCURRENCY whose processor waits
// job.data.ms; VmRSS of this process 2 s after the Worker is ready, then with
// BENCH_JOBS {"ms":30000} jobs active at once. The Queue that adds them lives in this
// process too (one more Redis connection). Prints:
//   BULLMQ_RSS idle_mib=M busy_mib=M
//
// Exits 0, or 1 after BENCH_TIMEOUT_S seconds or on an error.
// Environment: BENCH_REDIS_PORT (required; host is 127.0.0.1), REDISCLI_AUTH (its password,
// if any), BENCH_MODE (noop),
// BENCH_JOBS (100000), BENCH_CONCURRENCY (100), BENCH_QUEUE ("bench"), BENCH_PREFIX
// ("bmq"), BENCH_TIMEOUT_S (300).
'use strict';

const fs = require('fs');
const { Queue, Worker } = require('bullmq');

const CHUNK = 1000;

function intEnv(name, def) {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer`);
  return n;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function rssMib() {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return (Number(m[1]) / 1024).toFixed(1);
}

// Redis's CPU seconds so far; with reset, zeroes its per-command figures first.
async function redisCpuS(queue, reset) {
  const client = await queue.client;
  if (reset) await client.config('RESETSTAT');
  const info = await client.info('cpu');
  let s = 0;
  for (const m of info.matchAll(/^used_cpu_(?:sys|user):([\d.]+)/gm)) s += Number(m[1]);
  return s;
}

async function addJobs(queue, n, data) {
  for (let i = 0; i < n; i += CHUNK) {
    const k = Math.min(CHUNK, n - i);
    await queue.addBulk(Array.from({ length: k }, () => ({ name: 'bench', data })));
  }
}

// Resolves when `count` events `name` have come from worker.
function countEvents(worker, name, count) {
  let seen = 0;
  return new Promise((resolve) => {
    worker.on(name, () => {
      if (++seen === count) resolve(process.hrtime.bigint());
    });
  });
}

async function noop(cfg) {
  const queue = new Queue(cfg.name, cfg.opts);
  const t0 = process.hrtime.bigint();
  await addJobs(queue, cfg.jobs, {});
  const preloadS = Number(process.hrtime.bigint() - t0) / 1e9;

  const redis0 = await redisCpuS(queue, true);
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  const worker = new Worker(cfg.name, async () => {}, { ...cfg.opts, concurrency: cfg.concurrency });
  worker.on('failed', (job, err) => console.error(`bullmq_bench: job ${job && job.id} failed: ${err && err.message}`));
  worker.on('error', (err) => console.error(`bullmq_bench: worker error: ${err.message}`));
  const end = await countEvents(worker, 'completed', cfg.jobs);
  const seconds = Number(end - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const redisS = (await redisCpuS(queue, false)) - redis0;
  if (process.env.BENCH_COMMANDSTATS) {
    fs.writeFileSync(process.env.BENCH_COMMANDSTATS, await (await queue.client).info('commandstats'));
  }

  await worker.close();
  await queue.close();
  console.log(`BULLMQ jobs=${cfg.jobs} concurrency=${cfg.concurrency} ` +
    `preload_s=${preloadS.toFixed(2)} seconds=${seconds.toFixed(3)} ` +
    `rate=${(cfg.jobs / seconds).toFixed(0)} cpu_s=${((cpu.user + cpu.system) / 1e6).toFixed(2)} ` +
    `redis_cpu_s=${redisS.toFixed(2)}`);
}

async function rss(cfg) {
  const queue = new Queue(cfg.name, cfg.opts);
  const worker = new Worker(cfg.name, (job) => sleep(job.data.ms), { ...cfg.opts, concurrency: cfg.concurrency });
  worker.on('error', (err) => console.error(`bullmq_bench: worker error: ${err.message}`));
  await worker.waitUntilReady();
  await sleep(2000);
  const idle = rssMib();
  const running = countEvents(worker, 'active', cfg.jobs);
  await addJobs(queue, cfg.jobs, { ms: 30000 });
  await running;
  await sleep(500); // as ops/bench.sh does for Conveyor
  console.log(`BULLMQ_RSS idle_mib=${idle} busy_mib=${rssMib()}`);
  process.exit(0); // the jobs are abandoned: the bench flushes Redis
}

async function main() {
  const port = intEnv('BENCH_REDIS_PORT', 0);
  if (!port) throw new Error('BENCH_REDIS_PORT is required');
  const mode = process.env.BENCH_MODE || 'noop';
  // the bench's Redis wants a password (ops/services.sh puts it in REDISCLI_AUTH)
  const auth = process.env.REDISCLI_AUTH ? { password: process.env.REDISCLI_AUTH } : {};
  const cfg = {
    jobs: intEnv('BENCH_JOBS', 100000),
    concurrency: intEnv('BENCH_CONCURRENCY', 100),
    name: process.env.BENCH_QUEUE || 'bench',
    // BullMQ's Worker needs maxRetriesPerRequest: null on its blocking connection.
    opts: {
      connection: { host: '127.0.0.1', port, maxRetriesPerRequest: null, ...auth },
      prefix: process.env.BENCH_PREFIX || 'bmq',
    },
  };
  const timeoutS = intEnv('BENCH_TIMEOUT_S', 300);
  setTimeout(() => {
    console.error(`bullmq_bench: not done after ${timeoutS}s`);
    process.exit(1);
  }, timeoutS * 1000).unref();
  if (mode === 'noop') await noop(cfg);
  else if (mode === 'rss') await rss(cfg);
  else throw new Error(`BENCH_MODE must be noop or rss, not ${mode}`);
}

main().catch((err) => {
  console.error(`bullmq_bench: ${err.stack || err}`);
  process.exit(1);
});
