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

test('closing the terminal under make run stops everything it started (servers included)',
  { timeout: 240000 }, async () => {
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

      term.kill('SIGKILL'); // the window closes: the terminal hangs up
      await waitFor(() => Object.values(pids).every((pid) => !pidAlive(pid)),
        { timeout: 60000, interval: 200, what: 'every process to stop' }).catch((err) => {
        const left = Object.entries(pids).filter(([, pid]) => pidAlive(pid)).map(([n]) => n);
        err.message += ` (still running: ${left.join(', ')}; run.log: ${
          fs.existsSync(path.join(dir, 'log', 'run.log')) ? fs.readFileSync(path.join(dir, 'log', 'run.log'), 'utf8') : '-'})`;
        throw err;
      });
      const said = fs.readFileSync(path.join(dir, 'log', 'run.log'), 'utf8');
      assert.match(said, /Redis stopped/, 'the stop, told to its log as the terminal is gone');
      assert.match(said, /run: stopped/);
      assert.match(fs.readFileSync(path.join(dir, 'log', 'worker.log'), 'utf8'), /stopped/,
        'the worker stopped cleanly (SIGTERM), not killed by the hang-up');
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
  });
