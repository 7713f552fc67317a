'use strict';
// ops/services.sh (make run, make check, make bench): the private Redis and PostgreSQL
// stay in the caller's session (one scheduler autogroup: a server alone in an autogroup
// of its own was seen to wait seconds for a CPU under load) but out of its process group
// (the terminal's Ctrl-C meant for make does not reach them).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { pidAlive } = require('./lib/stack');

const ROOT = path.resolve(__dirname, '..', '..');
const SERVICES = path.join(ROOT, 'ops', 'services.sh');

// {pgrp, session} of pid, from /proc/PID/stat (fields 5 and 6, after "(comm)").
function ids(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { pgrp: Number(rest[2]), session: Number(rest[3]) };
}

function autogroup(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/autogroup`, 'utf8').split(' ')[0];
  } catch {
    return null; // a kernel without autogroups
  }
}

function firstLine(file) {
  return Number(fs.readFileSync(file, 'utf8').split('\n')[0].trim());
}

test('services.sh: Redis and PostgreSQL run in the caller\'s session, in process groups of their own',
  { timeout: 180000 }, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cv-services-'));
    const [rport, pport] = execFileSync(path.join(ROOT, 'ops', 'freeport.sh'), ['2'], { encoding: 'utf8' })
      .trim().split('\n');
    const run = (...args) => execFileSync(SERVICES, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 150000 });
    try {
      run('start', dir, rport, pport, '--fast');
      const base = fs.existsSync(path.join(dir, 'pg', 'base'))
        ? fs.readFileSync(path.join(dir, 'pg', 'base'), 'utf8').trim() : path.join(dir, 'pg');
      const servers = {
        redis: firstLine(path.join(dir, 'redis', 'redis.pid')),
        postgres: firstLine(path.join(base, 'data', 'postmaster.pid')),
      };
      const me = ids(process.pid);
      for (const [name, pid] of Object.entries(servers)) {
        assert.ok(pidAlive(pid), `${name} (pid ${pid}) runs`);
        const them = ids(pid);
        assert.equal(them.session, me.session, `${name} is in the caller's session`);
        assert.notEqual(them.pgrp, me.pgrp, `${name} is out of the caller's process group`);
        assert.equal(autogroup(pid), autogroup(process.pid), `${name} shares the caller's autogroup`);
      }
      // Redis wants its password; PostgreSQL listens on no TCP port, only its socket
      const password = fs.readFileSync(path.join(dir, 'redis', 'password'), 'utf8').trim();
      assert.match(password, /^[0-9a-f]{48}$/);
      for (const f of ['env', 'redis/password', 'redis/redis.conf']) {
        assert.equal(fs.statSync(path.join(dir, f)).mode & 0o077, 0, `${f} is private`);
      }
      const envFile = fs.readFileSync(path.join(dir, 'env'), 'utf8');
      assert.ok(envFile.includes(`CONVEYOR_REDIS_URL='redis://:${password}@127.0.0.1:${rport}'`), envFile);
      const cli = (auth, ...args) => {
        const env = { ...process.env };
        delete env.REDISCLI_AUTH;
        if (auth) env.REDISCLI_AUTH = auth;
        return execFileSync('redis-cli', ['-p', rport, ...args], { encoding: 'utf8', env }).trim();
      };
      assert.match(cli(null, 'get', 'x'), /NOAUTH/);
      assert.match(cli('wrong', 'get', 'x'), /NOAUTH|WRONGPASS|invalid/i);
      assert.equal(cli(password, 'ping'), 'PONG');
      const dbUrl = /CONVEYOR_DATABASE_URL='([^']*)'/.exec(envFile)[1];
      assert.match(dbUrl, /^host=\//, 'PostgreSQL is reached through its socket directory');
      assert.equal(execFileSync('psql', [dbUrl, '-X', '-A', '-t', '-c', 'SELECT 1'], { encoding: 'utf8' }).trim(), '1');
      assert.throws(() => execFileSync('psql', [`host=127.0.0.1 port=${pport} dbname=conveyor user=conveyor connect_timeout=3`,
        '-X', '-c', 'SELECT 1'], { encoding: 'utf8', stdio: 'pipe' }), /refused|could not connect/i,
      'no TCP listener on 127.0.0.1');
      run('stop', dir);
      for (const [name, pid] of Object.entries(servers)) assert.ok(!pidAlive(pid), `${name} stopped`);
    } finally {
      try {
        run('stop', dir);
      } catch { /* reported by the assertions above */ }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

test('services.sh: a server that took the Redis port before ours bound it is not taken for ours',
  { timeout: 120000 }, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cv-services-'));
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'cv-fakebin-'));
    const [rport, pport] = execFileSync(path.join(ROOT, 'ops', 'freeport.sh'), ['2'], { encoding: 'utf8' })
      .trim().split('\n');
    const real = execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim();
    // "redis-server" here: another Redis (no password) grabs the port, and ours never binds
    fs.writeFileSync(path.join(bin, 'redis-server'), `#!/bin/sh
${real} --port ${rport} --bind 127.0.0.1 --save '' --daemonize yes --pidfile ${bin}/other.pid >/dev/null 2>&1
exec sleep 60
`, { mode: 0o755 });
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
    delete env.REDISCLI_AUTH;
    try {
      let err = null;
      try {
        execFileSync(SERVICES, ['start', dir, rport, pport, '--fast'],
          { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 100000, env });
      } catch (e) {
        err = e;
      }
      assert.ok(err, 'start must fail');
      assert.match(String(err.stderr), /another server answers on 127\.0\.0\.1:/);
    } finally {
      try {
        execFileSync('redis-cli', ['-p', rport, 'shutdown', 'nosave'], { stdio: 'ignore', env });
      } catch { /* gone already */ }
      try {
        execFileSync(SERVICES, ['stop', dir], { stdio: 'ignore', timeout: 60000 });
      } catch { /* nothing left */ }
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });
