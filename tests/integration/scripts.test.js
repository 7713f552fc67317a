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
// the password (if any) in REDISCLI_AUTH, not on the command line
const env = { ...process.env, REDISCLI_AUTH: decodeURIComponent(url.password) };
if (!url.password) delete env.REDISCLI_AUTH;
const cli = (...args) => execFileSync('redis-cli', ['-h', url.hostname, '-p', url.port, '--no-raw', ...args],
  { encoding: 'utf8', env }).trim();
const raw = (...args) => execFileSync('redis-cli', ['-h', url.hostname, '-p', url.port, ...args],
  { encoding: 'utf8', env }).trim();

function fixture() {
  const P = `s${crypto.randomBytes(4).toString('hex')}:`;
  const id = 'job_' + crypto.randomBytes(16).toString('base64').replace(/[^A-Za-z0-9]/g, '').slice(0, 22).padEnd(22, 'x');
  const q = (k) => `${P}{default}:${k}`;
  return { P, id, q, job: `${P}job:${id}` };
}

// The enqueue script's 8 keys and 12 arguments for one job (see queue/lua/enqueue.lua).
const enqKeys = (f, id, idem) => [`${f.P}job:${id}`, f.q('ready'), f.q('scheduled'), f.q('marker'),
  `${f.P}owner:o`, `${f.P}idem:${idem}`, `${f.P}seq`, `${f.P}queues`];
const enqArgs = (id, o = {}) => [id, 'rec', 'default', '5', '3', o.runAt || '0', o.hash ? '1' : '0',
  o.hash || '', '60000', o.created || '0', '', o.restore || '0'];

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
  const out = cli('EVAL', lua('enqueue'), '8', ...enqKeys(f, f.id, '-'),
    ...enqArgs(f.id, { created: '1000', restore: '1' }));
  assert.match(out, /existing/);
  assert.equal(raw('HGET', f.job, 'token'), '3', 'the lease token is untouched');
  assert.equal(raw('HGET', f.job, 'status'), 'running');
  assert.equal(raw('ZSCORE', f.q('ready'), f.id), '', 'not queued a second time');
});

test('reclaim forgives a job\'s first lost lease (it runs again past its attempts), not the second; finish does not count the forgiven one', () => {
  const f = fixture();
  const reclaim = () => raw('EVAL', lua('reclaim'), '6', f.q('working'), f.q('ready'), f.q('marker'),
    f.q('dead'), `${f.P}done`, f.q('stats'), f.P, '100', `${f.P}ch:done`);
  const leased = (attempt) => {
    raw('HSET', f.job, 'status', 'running', 'token', String(attempt), 'attempt', String(attempt),
      'max_attempts', '1', 'priority', '5', 'queue', 'default', 'rec', 'x');
    raw('ZADD', f.q('working'), '1', f.id); // a lease long expired
  };
  leased(1);
  assert.equal(reclaim(), '1');
  assert.equal(raw('HGET', f.job, 'status'), 'queued', 'forgiven: queued again');
  assert.equal(raw('HGET', f.job, 'forgiven'), '1');
  assert.notEqual(raw('ZSCORE', f.q('ready'), f.id), '');
  raw('ZREM', f.q('ready'), f.id);
  leased(2);
  assert.equal(reclaim(), '1');
  assert.equal(raw('HGET', f.job, 'status'), 'dead', 'the second lost lease counts');
  assert.notEqual(raw('ZSCORE', f.q('dead'), f.id), '');

  // maxAttempts 2, one lost lease forgiven: attempt 2 failing is the first that counts
  const g = fixture();
  raw('HSET', g.job, 'status', 'running', 'token', '2', 'attempt', '2', 'max_attempts', '2',
    'forgiven', '1', 'priority', '5', 'queue', 'default', 'rec', 'x');
  raw('ZADD', g.q('working'), '9999999999999', g.id);
  const out = raw('EVAL', lua('finish'), '5', g.q('working'), g.q('scheduled'), g.q('dead'),
    `${g.P}done`, g.q('stats'), g.P, `${g.P}ch:done`, g.id, '2', 'retry',
    '{"code":"X","message":"boom","retryable":true}', '10');
  assert.equal(out, 'scheduled', 'one attempt of two used: tried again');
});

test('a job restored under its own id leases with tokens above those of its earlier life', () => {
  const f = fixture();
  const fetchOne = () => raw('EVAL', lua('fetch'), '5', f.q('ready'), f.q('working'), f.q('marker'),
    f.q('dead'), `${f.P}done`, f.P, '1', '60000', 'w1', 'default').split('\n');
  const finish = (token) => raw('EVAL', lua('finish'), '5', f.q('working'), f.q('scheduled'),
    f.q('dead'), `${f.P}done`, f.q('stats'), f.P, `${f.P}ch:done`, f.id, token, 'succeeded', '{}', '0');
  // first life: leased with token 1, then reclaimed twice (tokens 2 and 3)
  raw('EVAL', lua('enqueue'), '8', ...enqKeys(f, f.id, '-'), ...enqArgs(f.id));
  assert.deepEqual(fetchOne().slice(0, 2), [f.id, '1']);
  raw('HINCRBY', f.job, 'token', '2');
  // archived and gone from Redis; then retried by hand: restored under its id
  raw('DEL', f.job);
  raw('ZREM', f.q('working'), f.id);
  assert.match(cli('EVAL', lua('enqueue'), '8', ...enqKeys(f, f.id, '-'),
    ...enqArgs(f.id, { created: '1000', restore: '1' })), /created/);
  const [id, token] = fetchOne();
  assert.equal(id, f.id);
  assert.match(token, /^\d+$/);
  assert.ok(BigInt(token) > 3n, `token ${token} is above the first life's`);
  assert.equal(raw('HGET', f.job, 'token'), token, 'the record holds the token the worker got, digit for digit');
  for (const old of ['1', '2', '3']) assert.equal(finish(old), 'stale', `token ${old} of the first life`);
  assert.equal(raw('HGET', f.job, 'status'), 'running');
  assert.equal(finish(token), 'succeeded');
  // a second restore starts above the first one's tokens
  raw('DEL', f.job);
  cli('EVAL', lua('enqueue'), '8', ...enqKeys(f, f.id, '-'), ...enqArgs(f.id, { created: '1000', restore: '1' }));
  const [, token2] = fetchOne();
  assert.ok(BigInt(token2) > BigInt(token), `${token2} > ${token}`);
});

test('enqueue of several jobs in one call: queued in order, scheduled, one idempotency key', () => {
  const f = fixture();
  const ids = [0, 1, 2, 3].map((i) => `${f.id.slice(0, -1)}${i}`);
  const future = String(Date.now() + 3600000);
  // job 0 and 2 share an idempotency key and request: job 2 answers with job 0;
  // job 3 has the key with another request: a conflict; job 1 is delayed
  const keys = [...enqKeys(f, ids[0], 'k'), ...enqKeys(f, ids[1], '-'), ...enqKeys(f, ids[2], 'k'),
    ...enqKeys(f, ids[3], 'k')];
  const args = [...enqArgs(ids[0], { hash: 'h1' }), ...enqArgs(ids[1], { runAt: future }),
    ...enqArgs(ids[2], { hash: 'h1' }), ...enqArgs(ids[3], { hash: 'h2' })];
  const out = raw('EVAL', lua('enqueue'), String(keys.length), ...keys, ...args).split('\n');
  assert.equal(out.length, 4, 'one answer per job');
  assert.match(out[0], /^created \d{13}$/, 'created, with its creation ms');
  assert.match(out[1], /^created \d{13}$/);
  assert.equal(raw('HGET', `${f.P}job:${ids[0]}`, 'status'), 'queued');
  assert.equal(raw('HGET', `${f.P}job:${ids[1]}`, 'status'), 'scheduled');
  assert.equal(out[2], `existing ${ids[0]}`, 'same key, same request');
  assert.equal(out[3], `conflict ${ids[0]}`, 'same key, another request');
  assert.equal(raw('ZCARD', f.q('ready')), '1');
  assert.equal(raw('ZSCORE', f.q('scheduled'), ids[1]), future);
  assert.equal(raw('EXISTS', `${f.P}job:${ids[2]}`), '0');
  assert.equal(raw('EXISTS', `${f.P}job:${ids[3]}`), '0');
  assert.equal(raw('ZCARD', `${f.P}owner:o`), '2');
  assert.equal(raw('ZSCORE', f.q('marker'), 'w'), '0', 'a blocked worker is woken');
  // the hash holds what the scripts read; the record the rest
  assert.deepEqual(raw('HKEYS', `${f.P}job:${ids[0]}`).split('\n').sort(),
    ['created', 'max_attempts', 'priority', 'queue', 'rec', 'status']);
  // a second call queues after the first (the sequence is taken once per call)
  const more = [1, 2].map((i) => `${f.id.slice(0, -2)}9${i}`);
  raw('EVAL', lua('enqueue'), '16', ...enqKeys(f, more[0], '-'), ...enqKeys(f, more[1], '-'),
    ...enqArgs(more[0]), ...enqArgs(more[1]));
  assert.deepEqual(raw('ZRANGE', f.q('ready'), '0', '-1').split('\n'), [ids[0], ...more]);
});
