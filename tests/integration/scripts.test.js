'use strict';
// The Lua scripts against a real Redis, white-box: the moves whose races are hard to
// provoke through the processes (a cancel that meets a retry or a shutdown, a restore that
// meets a live job, a stale lease).
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const lua = (name) => fs.readFileSync(path.join(__dirname, '..', '..', 'queue', 'lua', `${name}.lua`), 'utf8');
const url = new URL(process.env.CONVEYOR_REDIS_URL);
const cli = (...args) => execFileSync('redis-cli', ['-h', url.hostname, '-p', url.port, '--no-raw', ...args],
  { encoding: 'utf8' }).trim();
const raw = (...args) => execFileSync('redis-cli', ['-h', url.hostname, '-p', url.port, ...args],
  { encoding: 'utf8' }).trim();

function fixture() {
  const P = `s${crypto.randomBytes(4).toString('hex')}:`;
  const id = 'job_' + crypto.randomBytes(16).toString('base64').replace(/[^A-Za-z0-9]/g, '').slice(0, 22).padEnd(22, 'x');
  const q = (k) => `${P}{default}:${k}`;
  return { P, id, q, job: `${P}job:${id}` };
}

// A job "running" under lease token 3 with a cancel requested.
function runningWithCancel(f) {
  raw('HSET', f.job, 'status', 'running', 'token', '3', 'attempt', '1', 'max_attempts', '5',
    'priority', '5', 'queue', 'default', 'cancel', '1', 'rec', 'x');
  raw('ZADD', f.q('working'), '9999999999999', f.id);
}

test('finish: a retryable failure of a job whose cancel was requested ends canceled', () => {
  const f = fixture();
  runningWithCancel(f);
  const out = raw('EVAL', lua('finish'), '5', f.q('working'), f.q('scheduled'), f.q('dead'),
    `${f.P}done`, f.q('stats'), f.P, `${f.P}ch:done`, f.id, '3', 'retry',
    '{"code":"X","message":"boom","retryable":true}', '10');
  assert.equal(out, 'canceled');
  assert.equal(raw('HGET', f.job, 'status'), 'canceled');
  assert.equal(raw('ZSCORE', f.q('scheduled'), f.id), '', 'not scheduled again');
  assert.notEqual(raw('ZSCORE', `${f.P}done`, f.id), '', 'waiting to be archived');
});

test('finish: a stale token changes nothing', () => {
  const f = fixture();
  runningWithCancel(f);
  const out = raw('EVAL', lua('finish'), '5', f.q('working'), f.q('scheduled'), f.q('dead'),
    `${f.P}done`, f.q('stats'), f.P, `${f.P}ch:done`, f.id, '2', 'succeeded', '{}', '0');
  assert.equal(out, 'stale');
  assert.equal(raw('HGET', f.job, 'status'), 'running');
  assert.notEqual(raw('ZSCORE', f.q('working'), f.id), '');
});

test('release: a job whose cancel was requested ends canceled instead of running again', () => {
  const f = fixture();
  runningWithCancel(f);
  const out = raw('EVAL', lua('release'), '6', f.job, f.q('working'), f.q('ready'), f.q('marker'),
    `${f.P}done`, f.q('stats'), f.id, '3', `${f.P}ch:done`);
  assert.equal(out, '1');
  assert.equal(raw('HGET', f.job, 'status'), 'canceled');
  assert.equal(raw('ZSCORE', f.q('ready'), f.id), '', 'not queued again');
  assert.equal(raw('ZSCORE', f.q('working'), f.id), '', 'lease gone');
});

test('release: without a cancel the job is queued again and the attempt not counted', () => {
  const f = fixture();
  runningWithCancel(f);
  raw('HDEL', f.job, 'cancel');
  raw('EVAL', lua('release'), '6', f.job, f.q('working'), f.q('ready'), f.q('marker'),
    `${f.P}done`, f.q('stats'), f.id, '3', `${f.P}ch:done`);
  assert.equal(raw('HGET', f.job, 'status'), 'queued');
  assert.equal(raw('HGET', f.job, 'attempt'), '0');
  assert.notEqual(raw('ZSCORE', f.q('ready'), f.id), '');
});

test('enqueue under an id Redis holds (a restore racing another) leaves the live job alone', () => {
  const f = fixture();
  runningWithCancel(f);
  const out = cli('EVAL', lua('enqueue'), '8', f.job, f.q('ready'), f.q('scheduled'), f.q('marker'),
    `${f.P}owner:o`, `${f.P}idem:-`, `${f.P}seq`, `${f.P}queues`, f.id, 'rec', 'noop', 'default', 'o',
    '5', '3', '0', '0', '', '1000', '0', '');
  assert.match(out, /existing/);
  assert.equal(raw('HGET', f.job, 'token'), '3', 'the lease token is untouched');
  assert.equal(raw('HGET', f.job, 'status'), 'running');
  assert.equal(raw('ZSCORE', f.q('ready'), f.id), '', 'not queued a second time');
});
