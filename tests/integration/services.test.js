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

function alive(pid) {
  try {
    const state = fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/^State:\s+(\S)/m)[1];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
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
        assert.ok(alive(pid), `${name} (pid ${pid}) runs`);
        const them = ids(pid);
        assert.equal(them.session, me.session, `${name} is in the caller's session`);
        assert.notEqual(them.pgrp, me.pgrp, `${name} is out of the caller's process group`);
        assert.equal(autogroup(pid), autogroup(process.pid), `${name} shares the caller's autogroup`);
      }
      assert.equal(execFileSync('redis-cli', ['-p', rport, 'ping'], { encoding: 'utf8' }).trim(), 'PONG');
      run('stop', dir);
      for (const [name, pid] of Object.entries(servers)) assert.ok(!alive(pid), `${name} stopped`);
    } finally {
      try {
        run('stop', dir);
      } catch { /* reported by the assertions above */ }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
