'use strict';
// ops/run.sh (what `make run` runs once built) in a terminal window that is closed under
// it: the shell hangs up its jobs, and run.sh stops the api, worker, scheduler, test
// provider and the private Redis and PostgreSQL, as Ctrl-C does. The terminal is a
// pseudo-terminal of script(1) running an interactive bash.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');
const { waitFor, pidAlive } = require('./lib/stack');

const ROOT = path.resolve(__dirname, '..', '..');

// The pid a conveyor process wrote in its first JSON log line.
function loggedPid(file) {
  const m = /"pid":(\d+)/.exec(fs.readFileSync(file, 'utf8'));
  return m ? Number(m[1]) : null;
}

// The parent pid of pid (field 4 of /proc/PID/stat, after "(comm)").
function parentOf(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

// Starts ops/run.sh in an interactive bash under script(1), waits until it is up, runs
// body({term, dir, pids, runPid}), then checks that every process it started stops
// within 60 s, and cleans up whatever is left.
async function withRun(body) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cv-run-'));
  const [rport, pport, aport, prport] = execFileSync(path.join(ROOT, 'ops', 'freeport.sh'), ['4'],
    { encoding: 'utf8' }).trim().split('\n');
  const env = { PS1: '$ ' };
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('CONVEYOR_') && k !== 'REDISCLI_AUTH') env[k] = v;
  }
  Object.assign(env, {
    CONVEYOR_VAR: dir,
    CONVEYOR_BIN: process.env.CONVEYOR_BIN || path.join(ROOT, 'bin', 'conveyor'),
    CONVEYOR_RUN_REDIS_PORT: rport,
    CONVEYOR_RUN_PG_PORT: pport,
    CONVEYOR_LISTEN: `127.0.0.1:${aport}`,
    CONVEYOR_RUN_PROVIDER_PORT: prport,
  });
  const term = spawn('script', ['-qfec', 'bash --norc --noprofile -i', '/dev/null'],
    { env, cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let screen = '';
  term.stdout.on('data', (d) => { screen += d; });
  term.stderr.on('data', (d) => { screen += d; });
  const pids = {};
  const runLog = () => (fs.existsSync(path.join(dir, 'log', 'run.log'))
    ? fs.readFileSync(path.join(dir, 'log', 'run.log'), 'utf8') : '-');
  try {
    term.stdin.write(`${path.join(ROOT, 'ops', 'run.sh')}\n`);
    await waitFor(() => screen.includes('Ctrl-C stops everything'),
      { timeout: 180000, interval: 200, what: 'make run to be up' }).catch((err) => {
      err.message += `\n${screen.slice(-2000)}`;
      throw err;
    });
    const base = fs.existsSync(path.join(dir, 'pg', 'base'))
      ? fs.readFileSync(path.join(dir, 'pg', 'base'), 'utf8').trim() : path.join(dir, 'pg');
    pids.redis = Number(fs.readFileSync(path.join(dir, 'redis', 'redis.pid'), 'utf8').trim());
    pids.postgres = Number(fs.readFileSync(path.join(base, 'data', 'postmaster.pid'), 'utf8')
      .split('\n')[0]);
    for (const name of ['api', 'worker', 'scheduler']) {
      pids[name] = loggedPid(path.join(dir, 'log', `${name}.log`));
    }
    for (const [name, pid] of Object.entries(pids)) assert.ok(pid && pidAlive(pid), `${name} runs`);
    await body({ term, dir, pids, runPid: parentOf(pids.api) });
    await waitFor(() => Object.values(pids).every((pid) => !pidAlive(pid)),
      { timeout: 60000, interval: 200, what: 'every process to stop' }).catch((err) => {
      const left = Object.entries(pids).filter(([, pid]) => pidAlive(pid)).map(([n]) => n);
      err.message += ` (still running: ${left.join(', ')}; run.log: ${runLog()})`;
      throw err;
    });
    assert.match(fs.readFileSync(path.join(dir, 'log', 'worker.log'), 'utf8'), /stopped/,
      'the worker stopped cleanly (SIGTERM), not killed');
    // what was said of the stop goes to run.log (the terminal may be gone); its last
    // line comes once Redis is seen gone
    await waitFor(() => /Redis stopped/.test(runLog()),
      { timeout: 15000, interval: 100, what: 'run.log to tell of the stop' }).catch((err) => {
      err.message += `: ${runLog()}`;
      throw err;
    });
    return runLog();
  } finally {
    term.kill('SIGKILL');
    try {
      execFileSync(path.join(ROOT, 'ops', 'services.sh'), ['stop', dir], { stdio: 'ignore', timeout: 60000 });
    } catch { /* nothing left */ }
    for (const pid of Object.values(pids)) {
      if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('closing the terminal under make run stops everything it started (servers included)',
  { timeout: 240000 }, async () => {
    const said = await withRun(async ({ term }) => {
      term.kill('SIGKILL'); // the window closes: the terminal hangs up
    });
    assert.match(said, /run: stopped/, 'the script stopped it, and told its log');
  });

test('make run killed with -9: what it started is stopped all the same (its watcher)',
  { timeout: 240000 }, async () => {
    const said = await withRun(async ({ runPid }) => {
      assert.match(fs.readFileSync(`/proc/${runPid}/cmdline`, 'utf8'), /run\.sh/);
      process.kill(runPid, 'SIGKILL');
    });
    assert.match(said, /stopped what the script left/);
  });
