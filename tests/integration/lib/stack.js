'use strict';
// tests/integration/lib/stack.js — one private Conveyor deployment per test.
//
// The Redis and PostgreSQL servers come from ops/check.sh (CONVEYOR_REDIS_URL,
// CONVEYOR_DATABASE_URL); the binary from CONVEYOR_BIN. startStack() gives the test its
// own Redis key prefix and PostgreSQL schema, runs `conveyor migrate`, then starts
// `conveyor api`, N workers and M schedulers, each under `timeout` (a bounded lifetime
// even if node dies) in its own process group, with stdout+stderr kept in a buffer.
// withStack() runs a test body against a fresh stack, prints the processes' logs when it
// fails, always stops everything, and fails the test if a process crashed or did not
// shut down cleanly on SIGTERM. stack.startExtraApi() adds another api process on the
// same data (several api processes behind one balancer); stack.cli(args) runs an operator
// command such as `conveyor users create` against the stack.
//
// By hand: ops/services.sh start /tmp/itest RPORT PPORT --fast; set -a; . /tmp/itest/env;
// set +a; CONVEYOR_BIN=$PWD/bin/conveyor node --test tests/integration/; then
// ops/services.sh stop /tmp/itest. CONVEYOR_TEST_LOG_DIR=dir keeps every process's log.

const { spawn, execFile } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { inspect } = require('node:util');

const BIN = process.env.CONVEYOR_BIN || path.resolve(__dirname, '../../../bin/conveyor');
const REDIS_URL = process.env.CONVEYOR_REDIS_URL || 'redis://127.0.0.1:6379';
const DATABASE_URL =
  process.env.CONVEYOR_DATABASE_URL || 'host=127.0.0.1 port=5432 dbname=conveyor user=conveyor';

const PROCESS_LIFETIME_S = 300; // `timeout` kills a binary we lost track of
const STOP_GRACE_MS = 5000; // SIGTERM, then SIGKILL
const STARTUP_MS = 1000; // a process stopped younger than this may not handle signals yet
const LOG_KEEP_BYTES = 256 * 1024; // per process
const LOG_TAIL_LINES = 150; // printed per process when a test fails
const HEALTH_TIMEOUT_MS = 20000;
const CMD_TIMEOUT_MS = 30000; // migrate, psql, redis-cli
// CONVEYOR_TEST_LOG_DIR: also write every process's whole output to DIR/<prefix>-<name>.log
const LOG_DIR = process.env.CONVEYOR_TEST_LOG_DIR || '';

const FAST_ENV = {
  CONVEYOR_BACKOFF_SCALE: '0.001',
  CONVEYOR_LEASE_MS: '1500',
  CONVEYOR_SCHEDULER_INTERVAL_MS: '50',
  CONVEYOR_SHUTDOWN_TIMEOUT_MS: '5000',
  CONVEYOR_LOG_LEVEL: 'info',
};

const ID_RE = /^job_[0-9A-Za-z]{22}$/;

// ---------------------------------------------------------------- small helpers

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function randomName(len = 10) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.randomBytes(len);
  let s = 't';
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return s;
}

// {host, port, password} of a redis://[[user:]password@]host[:port] URL (password '' if
// none).
function redisAddress(url) {
  const m = /^(?:redis:\/\/)?(?:(?:[^:@/]*:)?([^@]*)@)?([^:/@]+)(?::(\d+))?/.exec(url);
  if (!m) throw new Error('cannot parse CONVEYOR_REDIS_URL');
  return { host: m[2], port: m[3] || '6379', password: m[1] || '' };
}

// The environment for redis-cli against url: its password in REDISCLI_AUTH (never on
// the command line), or none.
function redisCliEnv(url) {
  const { password } = redisAddress(url);
  const env = { ...process.env };
  if (password) env.REDISCLI_AUTH = password;
  else delete env.REDISCLI_AUTH;
  return env;
}

// run(file, args, opts) → {code, stdout, stderr} (text); rejects on spawn error or
// timeout; a non-zero exit is an error unless opts.allowFail.
function run(file, args, { input, env, allowFail = false } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { env, encoding: 'utf8', timeout: CMD_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        if (err && (!allowFail || typeof err.code !== 'number')) {
          err.message += `\n$ ${file} ${args.join(' ').slice(0, 300)}\n${stderr}`;
          reject(err);
          return;
        }
        resolve({ code, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

// redis-cli against the Redis at url. Returns stdout without the final newline (raw
// mode: one line per element of an array reply).
async function redisCli(url, args, { input } = {}) {
  const { host, port } = redisAddress(url);
  const argv = ['-h', host, '-p', port];
  if (input !== undefined) argv.push('-x');
  const { stdout } = await run('redis-cli', argv.concat(args.map(String)),
    { input, env: redisCliEnv(url) });
  return stdout.replace(/\n$/, '');
}

// psql against the test database; returns unaligned, tuples-only output.
async function psql(sql) {
  const { stdout } = await run('psql', [DATABASE_URL, '-X', '-q', '-A', '-t', '-v',
    'ON_ERROR_STOP=1', '-c', sql]);
  return stdout.trim();
}

function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

// A free TCP port in 20000-32767 (below the ephemeral range, like ops/freeport.sh).
async function freePort() {
  for (let i = 0; i < 100; i++) {
    const port = 20000 + crypto.randomInt(12768);
    if (await portFree(port)) return port;
  }
  throw new Error('no free port found');
}

// waitFor(fn, {timeout, interval, what}) — calls fn until it returns a truthy value (which
// is returned). fn may also throw (e.g. an assertion) to mean "not yet". On timeout
// throws an error naming `what` (a string, or a function giving one) with the last value
// or error. For synchronisation only: timeouts are generous bounds, never assertions.
// 1 if process pid exists and is not a zombie (read from /proc).
function pidAlive(pid) {
  try {
    const state = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^State:\s+(\S)/m)[1];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

async function waitFor(fn, { timeout = 10000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = { value: v };
    } catch (err) {
      if (err && err.fatal) throw err;
      last = { error: err };
    }
    if (Date.now() >= deadline) {
      const detail = last.error
        ? `last error: ${last.error && last.error.message}`
        : `last value: ${inspect(last.value, { depth: 4 })}`;
      const name = typeof what === 'function' ? what() : what;
      const e = new Error(`timed out after ${timeout} ms waiting for ${name}; ${detail}`);
      if (last.error) e.cause = last.error;
      throw e;
    }
    await sleep(interval);
  }
}

// ---------------------------------------------------------------- processes

const everyProcess = new Set(); // live process groups, killed when node exits

function killGroup(pgid, signal) {
  for (const target of [-pgid, pgid]) { // just spawned: timeout may not lead a group yet
    try {
      process.kill(target, signal);
      return true;
    } catch { /* try the next */ }
  }
  return false;
}

process.on('exit', () => {
  for (const p of everyProcess) killGroup(p.pgid, 'SIGKILL');
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    for (const p of everyProcess) killGroup(p.pgid, 'SIGKILL');
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
  });
}

// One server process (conveyor or redis-server): `timeout` (the process-group leader,
// pgid: it makes a group of its own) runs the binary as its only child. Signals other
// than SIGKILL go to the binary itself, exactly once; SIGKILL goes to the whole group.
// Not detached (setsid): each session is a scheduler autogroup of its own, and on this
// machine's kernel a server alone in its autogroup was seen to wait seconds for a CPU
// while others kept both cores busy.
class Proc {
  constructor(name, argv, env, logName) {
    this.name = name;
    this.chunks = [];
    this.bytes = 0;
    this.exit = null; // {code, signal} once exited
    this.expectExit = false; // set when we signal it
    this.startedAt = Date.now();
    this.child = spawn(
      'timeout',
      ['-k', '5', String(PROCESS_LIFETIME_S), ...argv],
      { env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.pgid = this.child.pid;
    everyProcess.add(this);
    const keep = (buf) => {
      this.chunks.push(buf);
      this.bytes += buf.length;
      while (this.bytes > LOG_KEEP_BYTES && this.chunks.length > 1) {
        this.bytes -= this.chunks.shift().length;
      }
    };
    if (LOG_DIR) {
      const file = fs.createWriteStream(path.join(LOG_DIR, `${logName}.log`));
      this.child.stdout.pipe(file);
      this.child.stderr.pipe(file);
    }
    this.child.stdout.on('data', keep);
    this.child.stderr.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        keep(Buffer.from(`spawn error: ${err.message}\n`));
        this.exit = this.exit || { code: -1, signal: null };
        everyProcess.delete(this);
        resolve(this.exit);
      });
      this.child.on('close', (code, signal) => {
        this.exit = this.exit || { code, signal };
        everyProcess.delete(this);
        resolve(this.exit);
      });
    });
  }

  get alive() {
    return this.exit === null;
  }

  // The binary's pid (timeout's child), or null when it is gone.
  binaryPid() {
    try {
      const kids = fs.readFileSync(`/proc/${this.pgid}/task/${this.pgid}/children`, 'utf8');
      const pid = parseInt(kids.trim().split(/\s+/)[0], 10);
      return Number.isInteger(pid) ? pid : null;
    } catch {
      return null;
    }
  }

  // Sends signal (marking the exit as expected). Returns the `exited` promise.
  async signal(sig) {
    this.expectExit = true;
    if (sig === 'SIGKILL') killGroup(this.pgid, 'SIGKILL');
    else await this.send(sig);
    return this.exited;
  }

  // Sends sig to the binary alone (e.g. SIGSTOP/SIGCONT), not expecting an exit.
  async send(sig) {
    if (!this.alive) return;
    // the binary may not be forked yet right after spawn
    const pid = await waitFor(() => this.binaryPid() || !this.alive, {
      timeout: 2000, interval: 10, what: `${this.name} binary pid`,
    }).catch(() => null);
    if (typeof pid === 'number') {
      try {
        process.kill(pid, sig);
      } catch { /* already gone */ }
    } else if (this.alive) {
      killGroup(this.pgid, sig);
    }
  }

  // Resolves with {code, signal} once exited; rejects after timeoutMs.
  async waitExit(timeoutMs) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.name} did not exit within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  log() {
    return Buffer.concat(this.chunks).toString('utf8');
  }

  tail(lines = LOG_TAIL_LINES) {
    const all = this.log().split('\n');
    return all.slice(-lines - 1).join('\n');
  }

  describeExit() {
    if (!this.exit) return 'running';
    return this.exit.signal ? `killed by ${this.exit.signal}` : `exit code ${this.exit.code}`;
  }
}

// ---------------------------------------------------------------- HTTP

// One HTTP request with node:http (keep-alive through agent). Resolves with
// {status, headers (lower-case names), text} once the response has been read — even
// when the server answered before reading the whole request body (413) and then closed.
function httpRequest(agent, port, method, urlPath, headers, body, timeoutMs) {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value);
    };
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, agent, headers });
    const timer = setTimeout(() => {
      req.destroy();
      finish(new Error(`${method} ${urlPath}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => finish(null, {
        status: res.statusCode,
        headers: res.headers,
        text: Buffer.concat(chunks).toString('utf8'),
      }));
      res.on('error', (err) => finish(err));
    });
    let answered = false;
    req.on('response', () => { answered = true; });
    req.on('error', (err) => {
      const e = new Error(`${method} ${urlPath}: ${err.message}`);
      // the server closed an idle keep-alive connection as we reused it: it never saw
      // this request, which may be sent again (the documented node:http pattern)
      e.staleSocket = !answered && req.reusedSocket &&
        ['ECONNRESET', 'EPIPE'].includes(err.code);
      // an early answer (e.g. 413) may be followed by EPIPE/ECONNRESET on our upload
      if (!done) setTimeout(() => finish(e), e.staleSocket ? 0 : 200);
    });
    req.end(body);
  });
}

// SIGTERM p (if it runs), SIGKILL after STOP_GRACE_MS; adds to problems an unclean or
// slow exit of a process that was not told to stop before (or was too young for it).
// A worker may take its shutdown timeout (CONVEYOR_SHUTDOWN_TIMEOUT_MS) on top.
async function terminate(p, problems, graceMs = STOP_GRACE_MS) {
  if (!p.alive) return;
  const wasExpected = p.expectExit || Date.now() - p.startedAt < STARTUP_MS;
  p.signal('SIGTERM');
  let exit;
  try {
    exit = await p.waitExit(graceMs);
  } catch {
    killGroup(p.pgid, 'SIGKILL');
    await p.waitExit(10000).catch(() => {});
    problems.push(`${p.name} ignored SIGTERM for ${graceMs} ms (SIGKILLed)`);
    return;
  }
  if (!wasExpected && (exit.code !== 0 || exit.signal)) {
    problems.push(`${p.name}: ${p.describeExit()} after SIGTERM (expected exit code 0)`);
  }
}

// ---------------------------------------------------------------- the stack

class Stack {
  constructor(opts) {
    this.prefix = randomName();
    this.schema = randomName();
    this.token = crypto.randomBytes(24).toString('hex');
    this.jwtSecret = crypto.randomBytes(32).toString('hex');
    this.opts = opts;
    this.procs = [];
    this.workers = [];
    this.schedulers = [];
    this.apiProc = null;
    this.extraApis = []; // startExtraApi()
    this.redisProc = null; // a private redis-server (opts.privateRedis)
    this.redisUrl = REDIS_URL;
    this.stopped = false;
    // keep-alive, but an idle socket is dropped after 1 s: before the api's own idle
    // timeout (2 s) can close it under a request we are sending
    this.agent = new http.Agent({ keepAlive: true, timeout: 1000, maxSockets: 64 });
  }

  env(extra = {}) {
    return {
      ...process.env,
      CONVEYOR_REDIS_URL: this.redisUrl,
      CONVEYOR_DATABASE_URL: DATABASE_URL,
      CONVEYOR_REDIS_PREFIX: this.prefix,
      CONVEYOR_PG_SCHEMA: this.schema,
      ...(this.port ? { CONVEYOR_LISTEN: `127.0.0.1:${this.port}` } : {}),
      CONVEYOR_OPERATOR_TOKEN: this.token,
      CONVEYOR_JWT_SECRET: this.jwtSecret,
      ...FAST_ENV,
      ...this.opts.env,
      ...extra,
    };
  }

  spawn(role, name, extraEnv) {
    const p = new Proc(name, [BIN, role], this.env(extraEnv),
      `${this.prefix}-${name.replace(' ', '')}`);
    this.procs.push(p);
    return p;
  }

  // Starts one `conveyor api` process (log name `name`) on a free port and waits for its
  // GET /healthz; returns {port, proc}. A port taken meanwhile by another program makes
  // the api exit: then it tries another port (3 tries).
  async launchApi(name, extraEnv = {}) {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const proc = this.spawn('api', name, { ...extraEnv, CONVEYOR_LISTEN: `127.0.0.1:${port}` });
      try {
        await waitFor(async () => {
          if (!proc.alive) {
            const e = new Error(`${name} exited (${proc.describeExit()}) before /healthz`);
            e.fatal = true;
            throw e;
          }
          const r = await this.apiAt(port, 'GET', '/healthz', { token: null, timeoutMs: 1000 });
          return r.status === 200;
        }, { timeout: HEALTH_TIMEOUT_MS, what: `GET /healthz on port ${port}` });
        return { port, proc };
      } catch (err) {
        if (proc.alive || attempt === 3) throw err;
        proc.expectExit = true; // reported through err if it was the last try
      }
    }
  }

  // Starts the api (this.port, this.apiProc).
  async startApi() {
    const { port, proc } = await this.launchApi('api');
    this.port = port;
    this.apiProc = proc;
  }

  // Starts one more `conveyor api` process on its own port, sharing this stack's Redis
  // prefix and PostgreSQL schema (so its rate-limit counters and revocations too), with
  // extraEnv on top of the stack's environment. Returns {port, proc, api(method, path,
  // opts)} with api() as Stack.api but sent to that process. stop() stops it with the
  // others.
  async startExtraApi(extraEnv = {}) {
    const n = this.extraApis.length + 1;
    const { port, proc } = await this.launchApi(`api ${n}`, extraEnv);
    const extra = {
      port,
      proc,
      api: (method, urlPath, opts) => this.apiAt(port, method, urlPath, opts),
    };
    this.extraApis.push(extra);
    return extra;
  }

  // Runs `conveyor ARGS...` (an operator command, like migrate) with the stack's
  // environment plus env; input goes to its stdin. Resolves with {code, stdout, stderr},
  // whatever the exit code (bounded by CMD_TIMEOUT_MS).
  cli(args, { env, input } = {}) {
    return run(BIN, args, { env: this.env(env), input, allowFail: true });
  }

  // (Re)starts the private redis-server on its port (empty: no persistence).
  async startRedis() {
    this.redisProc = new Proc('redis', ['redis-server', '--port', String(this.redisPort),
      '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], process.env,
    `${this.prefix}-redis`);
    this.procs.push(this.redisProc);
    await waitFor(async () => (await this.redis('PING').catch(() => '')) === 'PONG',
      { timeout: 10000, what: `redis-server on port ${this.redisPort}` });
  }

  // Stops the private redis-server (SIGTERM) and waits until it is gone.
  async stopRedis() {
    await this.redisProc.signal('SIGTERM');
  }

  // Starts one more worker; returns its index in this.workers.
  startWorker(extraEnv = {}) {
    const i = this.workers.length;
    this.workers.push(this.spawn('worker', `worker ${i}`, extraEnv));
    return i;
  }

  startScheduler(extraEnv = {}) {
    const i = this.schedulers.length;
    this.schedulers.push(this.spawn('scheduler', `scheduler ${i}`, extraEnv));
    return i;
  }

  // Signals worker i (default SIGKILL) and resolves with {code, signal} when it exited.
  killWorker(i, signal = 'SIGKILL') {
    return this.workers[i].signal(signal);
  }

  killScheduler(i, signal = 'SIGKILL') {
    return this.schedulers[i].signal(signal);
  }

  async start() {
    if (this.opts.privateRedis) {
      this.redisPort = await freePort();
      this.redisUrl = `redis://127.0.0.1:${this.redisPort}`;
      await this.startRedis();
    }
    // `conveyor migrate` creates the schema (sql/migrate.h)
    const mig = await run(BIN, ['migrate'], { env: this.env(), allowFail: true });
    if (mig.code !== 0) {
      throw new Error(`conveyor migrate failed (exit ${mig.code}):\n${mig.stdout}${mig.stderr}`);
    }
    if (this.opts.api) await this.startApi();
    for (let i = 0; i < this.opts.workers; i++) this.startWorker();
    for (let i = 0; i < this.opts.schedulers; i++) this.startScheduler();
    return this;
  }

  // ------------------------------------------------------------ HTTP helpers

  // api(method, path, {body, headers, token, query, timeoutMs}) → {status, headers, json,
  // text}. body: an object (sent as JSON), a string or Buffer (sent as is). token:
  // undefined → the operator token, null → no Authorization header, a string → that
  // bearer token. query: an object appended to path as a query string (URL-encoded), e.g.
  // {token: null, query: {api_key: key}} sends a credential in the query string only.
  // headers: a null value removes a header the helper would add (e.g. content-type), any
  // other is sent as is (e.g. {Authorization: 'Basic ...'} with token: null).
  async api(method, urlPath, opts = {}) {
    return this.apiAt(this.port, method, urlPath, opts);
  }

  // api() sent to the api process listening on port (see startExtraApi).
  async apiAt(port, method, urlPath, { body, headers, token, query, timeoutMs = 30000 } = {}) {
    const h = {};
    if (token !== null) h.authorization = `Bearer ${token === undefined ? this.token : token}`;
    if (query) {
      const qs = new URLSearchParams(query).toString();
      if (qs) urlPath += (urlPath.includes('?') ? '&' : '?') + qs;
    }
    let payload;
    if (body !== undefined) {
      payload = Buffer.isBuffer(body)
        ? body
        : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      h['content-type'] = 'application/json';
    }
    for (const [k, v] of Object.entries(headers || {})) {
      if (v === null || v === undefined) delete h[k.toLowerCase()];
      else h[k.toLowerCase()] = String(v);
    }
    if (payload) h['content-length'] = String(payload.length);
    else if (method !== 'GET' && method !== 'HEAD') h['content-length'] = '0';
    const send = () => httpRequest(this.agent, port, method, urlPath, h, payload, timeoutMs);
    const res = await send().catch((err) => (err.staleSocket ? send() : Promise.reject(err)));
    let json = null;
    try {
      json = JSON.parse(res.text);
    } catch { /* not JSON */ }
    return { ...res, json };
  }

  // POST /v1/jobs expecting 202; returns the response (json is the job).
  async enqueue(body, { headers } = {}) {
    const r = await this.api('POST', '/v1/jobs', { body, headers });
    if (r.status !== 202) {
      throw new Error(`POST /v1/jobs ${JSON.stringify(body)} → ${r.status} ${r.text}`);
    }
    return r;
  }

  // Enqueues and returns the job JSON.
  async enqueueJob(body, opts) {
    return (await this.enqueue(body, opts)).json;
  }

  // Enqueues n jobs (body or body(i)) with `parallel` requests in flight; returns ids
  // in index order.
  async enqueueMany(n, body, { parallel = 20 } = {}) {
    const ids = new Array(n);
    let next = 0;
    const lane = async () => {
      while (next < n) {
        const i = next++;
        ids[i] = (await this.enqueueJob(typeof body === 'function' ? body(i) : body)).id;
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, n) }, lane));
    return ids;
  }

  // GET /v1/jobs/{id} expecting 200; returns the job JSON.
  async job(id, query = '') {
    const r = await this.api('GET', `/v1/jobs/${id}${query}`);
    if (r.status !== 200) throw new Error(`GET /v1/jobs/${id}${query} → ${r.status} ${r.text}`);
    return r.json;
  }

  // Polls the job until its status is one of `statuses` (string or array). Fails at once
  // if it reaches another terminal status. Returns the job JSON.
  async waitStatus(id, statuses, { timeout = 20000 } = {}) {
    const want = [].concat(statuses);
    const terminal = ['succeeded', 'failed', 'dead', 'canceled'];
    let last;
    return waitFor(
      async () => {
        last = await this.job(id);
        if (want.includes(last.status)) return last;
        if (terminal.includes(last.status) && !want.some((s) => !terminal.includes(s))) {
          const e = new Error(`job ${id} ended ${last.status}, expected ${want.join('|')}: ` +
            JSON.stringify(last));
          e.fatal = true;
          throw e;
        }
        return null;
      },
      { timeout, what: () => `job ${id} to be ${want.join('|')} (last: ${last && last.status})` },
    );
  }

  // Waits until every id has one of `statuses`; returns the jobs.
  async waitAll(ids, statuses, { timeout = 30000 } = {}) {
    const want = [].concat(statuses);
    let pending = ids;
    await waitFor(
      async () => {
        const jobs = await Promise.all(pending.map((id) => this.job(id)));
        pending = jobs.filter((j) => !want.includes(j.status)).map((j) => j.id);
        return pending.length === 0;
      },
      { timeout, interval: 100, what: `${ids.length} jobs to be ${want.join('|')}` },
    ).catch((err) => {
      err.message += ` (${pending.length} not yet, e.g. ${pending.slice(0, 3).join(', ')})`;
      throw err;
    });
    return Promise.all(ids.map((id) => this.job(id)));
  }

  // Every page of GET /v1/jobs?query (following nextCursor); returns {items, pages}.
  async listAll(query = '', { maxPages = 1000 } = {}) {
    const items = [];
    const pages = [];
    let cursor = null;
    for (let n = 0; n < maxPages; n++) {
      const q = [query, cursor ? `cursor=${encodeURIComponent(cursor)}` : '']
        .filter(Boolean).join('&');
      const r = await this.api('GET', `/v1/jobs${q ? `?${q}` : ''}`);
      if (r.status !== 200) throw new Error(`GET /v1/jobs?${q} → ${r.status} ${r.text}`);
      pages.push(r.json);
      items.push(...r.json.data);
      if (!r.json.hasMore) return { items, pages };
      cursor = r.json.nextCursor;
      if (!cursor) throw new Error(`hasMore without nextCursor: ${r.text}`);
    }
    throw new Error(`more than ${maxPages} pages`);
  }

  // The stats object of one queue from GET /v1/queues (undefined if absent).
  async queueStats(name = 'default') {
    const r = await this.api('GET', '/v1/queues');
    if (r.status !== 200) throw new Error(`GET /v1/queues → ${r.status} ${r.text}`);
    return r.json.data.find((q) => q.name === name);
  }

  // ------------------------------------------------------------ Redis / PostgreSQL

  // redis-cli ARGS... → its raw output.
  redis(...args) {
    return redisCli(this.redisUrl, args);
  }

  // redis-cli -x ARGS... with input (Buffer) as the last argument, byte for byte.
  redisWithInput(input, ...args) {
    return redisCli(this.redisUrl, args, { input });
  }

  key(...parts) {
    return [this.prefix, ...parts].join(':');
  }

  jobKey(id) {
    return this.key('job', id);
  }

  queueKey(queue, name) {
    return this.key(`{${queue}}`, name);
  }

  // Number of Redis keys under this stack's prefix.
  async countKeys() {
    const out = await this.redis('EVAL', `local c, n = '0', 0
repeat
  local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 1000)
  c = r[1]; n = n + #r[2]
until c == '0'
return n`, '0', `${this.prefix}:*`);
    return Number(out);
  }

  // Evaluates `return f(id)` style Lua over many job ids in batches: script gets the job
  // key prefix in ARGV[1] and ids in ARGV[2..]; returns the concatenated array replies
  // (raw lines).
  async evalOverIds(script, ids, batch = 2000) {
    const out = [];
    for (let i = 0; i < ids.length; i += batch) {
      const chunk = ids.slice(i, i + batch);
      const text = await this.redis('EVAL', script, '0', `${this.prefix}:job:`, ...chunk);
      if (text) out.push(...text.split('\n'));
    }
    return out;
  }

  psql(sql) {
    return psql(sql);
  }

  // ------------------------------------------------------------ shutdown

  // Problems seen so far: processes that exited without being told to.
  unexpectedExits() {
    return this.procs
      .filter((p) => !p.alive && !p.expectExit)
      .map((p) => `${p.name} exited unexpectedly (${p.describeExit()})`);
  }

  // SIGTERM everything still running, SIGKILL after 5 s, drop the schema and the keys.
  // Returns a list of problems (crashes, unclean or slow shutdowns); never throws.
  async stop() {
    if (this.stopped) return [];
    this.stopped = true;
    const problems = this.unexpectedExits();
    this.agent.destroy(); // our idle keep-alive connections would hold api threads
    const conveyor = this.procs.filter((p) => p !== this.redisProc);
    const workerGrace = STOP_GRACE_MS + Number(this.env().CONVEYOR_SHUTDOWN_TIMEOUT_MS);
    await Promise.all(conveyor.map((p) => terminate(p, problems,
      this.workers.includes(p) ? workerGrace : STOP_GRACE_MS)));
    for (const p of conveyor) killGroup(p.pgid, 'SIGKILL'); // stragglers in the group
    await psql(`DROP SCHEMA IF EXISTS "${this.schema}" CASCADE`).catch((err) => {
      problems.push(`dropping schema ${this.schema}: ${err.message}`);
    });
    if (this.redisProc) {
      await terminate(this.redisProc, problems);
    } else {
      await this.redis('EVAL', `local c = '0'
repeat
  local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 1000)
  c = r[1]
  for _, k in ipairs(r[2]) do redis.call('UNLINK', k) end
until c == '0'
return 1`, '0', `${this.prefix}:*`).catch(() => {});
    }
    return problems;
  }

  // Every process's log tail, for a failed test.
  logs() {
    const parts = [`stack prefix=${this.prefix} schema=${this.schema} port=${this.port}`];
    for (const p of this.procs) {
      parts.push(`----- ${p.name} (${p.describeExit()}) — last lines:\n${p.tail()}`);
    }
    return parts.join('\n');
  }
}

// startStack({workers, schedulers, env, api, privateRedis}) → a started Stack.
// privateRedis: the stack gets a redis-server of its own (stack.stopRedis/startRedis).
async function startStack({ workers = 1, schedulers = 1, env = {}, api = true,
  privateRedis = false } = {}) {
  const stack = new Stack({ workers, schedulers, env, api, privateRedis });
  try {
    await stack.start();
  } catch (err) {
    const problems = await stack.stop();
    err.message += `\n${stack.logs()}${problems.length ? `\n${problems.join('\n')}` : ''}`;
    throw err;
  }
  return stack;
}

// withStack(opts, body) — runs body(stack) against a fresh stack; always stops it. The
// test fails if body throws, or if a process crashed or did not stop cleanly; the
// processes' logs are printed on any failure.
async function withStack(opts, body) {
  const stack = await startStack(opts);
  let failure = null;
  try {
    await body(stack);
  } catch (err) {
    failure = err;
  }
  const problems = await stack.stop();
  if (!failure && problems.length) {
    failure = new Error(`process problems:\n  ${problems.join('\n  ')}`);
  } else if (failure && problems.length) {
    failure.message += `\n(also: ${problems.join('; ')})`;
  }
  if (failure) {
    process.stderr.write(`\n${stack.logs()}\n`);
    throw failure;
  }
}

// Asserts the error envelope of response r: status, code, requestId == X-Request-Id, and
// (when given) details.field among `field` (string or array).
function assertError(assert, r, status, code, field) {
  const ctx = `${r.status} ${r.text.slice(0, 400)}`;
  assert.equal(r.status, status, `HTTP status: ${ctx}`);
  assert.ok(r.json && typeof r.json.error === 'object' && r.json.error, `error envelope: ${ctx}`);
  const e = r.json.error;
  assert.equal(e.code, code, `error.code: ${ctx}`);
  assert.equal(typeof e.message, 'string', `error.message: ${ctx}`);
  assert.ok(e.message.length > 0, `error.message empty: ${ctx}`);
  assert.ok('details' in e, `error.details missing: ${ctx}`);
  assert.ok(r.headers['x-request-id'], `X-Request-Id header missing: ${ctx}`);
  assert.equal(e.requestId, r.headers['x-request-id'], `error.requestId vs X-Request-Id: ${ctx}`);
  if (field !== undefined) {
    const fields = [].concat(field);
    assert.ok(e.details && fields.includes(e.details.field),
      `details.field should be ${fields.join(' or ')}: ${ctx}`);
  }
}

module.exports = { ID_RE, startStack, withStack, waitFor, sleep, assertError, pidAlive };
