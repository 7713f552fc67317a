'use strict';
// Bad requests: each gets its exact 4xx and error envelope, and changes nothing.
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, assertError } = require('./lib/stack');

const UNKNOWN_ID = 'job_0000000000000000000000';
const noop = { type: 'noop' };
const deep = (n) => `{"type":"noop","input":{"a":${'['.repeat(n)}${']'.repeat(n)}}}`;

// {name, method?, path?, body?, headers?, token?, status, code, field?, check?(r), alt?}
// path may contain {id}: the id of a queued job created before the cases run. alt lists
// other [status, code] answers the contract leaves open (well-formed JSON that is not an
// object: "malformed" (400) or "invalid" (422) are both fair).
const CASES = [
  { name: 'malformed JSON', body: '{"type": "noop",', status: 400, code: 'INVALID_REQUEST' },
  { name: 'empty body', body: '', status: 400, code: 'INVALID_REQUEST' },
  { name: 'JSON array body', body: '[{"type":"noop"}]', status: 422, code: 'VALIDATION_ERROR',
    alt: [[400, 'INVALID_REQUEST']] },
  { name: 'JSON string body', body: '"noop"', status: 422, code: 'VALIDATION_ERROR',
    alt: [[400, 'INVALID_REQUEST']] },
  { name: 'invalid UTF-8', status: 400, code: 'INVALID_REQUEST',
    body: Buffer.concat([Buffer.from('{"type":"noop","input":{"a":"'),
      Buffer.from([0xc3, 0x28]), Buffer.from('"}}')]) },
  { name: 'type missing', body: { input: {} }, status: 422, code: 'VALIDATION_ERROR',
    field: 'type' },
  { name: 'type is a number', body: { type: 5 }, status: 422, code: 'VALIDATION_ERROR',
    field: 'type' },
  { name: 'unknown type', body: { type: 'nope.nope' }, status: 422, code: 'VALIDATION_ERROR',
    field: 'type' },
  { name: 'type in capitals', body: { type: 'NOOP' }, status: 422, code: 'VALIDATION_ERROR',
    field: 'type' },
  { name: 'input is a string', body: { type: 'noop', input: 'x' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'input' },
  { name: 'sleep without input.ms', body: { type: 'sleep', input: {} }, status: 422,
    code: 'VALIDATION_ERROR', field: 'input.ms' },
  { name: 'sleep input.ms negative', body: { type: 'sleep', input: { ms: -1 } }, status: 422,
    code: 'VALIDATION_ERROR', field: 'input.ms' },
  { name: 'sleep input.ms above 3600000', body: { type: 'sleep', input: { ms: 3600001 } },
    status: 422, code: 'VALIDATION_ERROR', field: 'input.ms' },
  { name: 'sleep input.ms a string', body: { type: 'sleep', input: { ms: '5' } }, status: 422,
    code: 'VALIDATION_ERROR', field: 'input.ms' },
  { name: 'fail input.times negative', body: { type: 'fail', input: { times: -2 } },
    status: 422, code: 'VALIDATION_ERROR', field: 'input.times' },
  { name: 'delaySeconds a string', body: { ...noop, delaySeconds: '5' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'delaySeconds' },
  { name: 'delaySeconds negative', body: { ...noop, delaySeconds: -1 }, status: 422,
    code: 'VALIDATION_ERROR', field: 'delaySeconds' },
  { name: 'delaySeconds and runAt both', status: 422, code: 'VALIDATION_ERROR',
    field: ['delaySeconds', 'runAt'],
    body: { ...noop, delaySeconds: 5, runAt: '2030-01-01T00:00:00Z' } },
  { name: 'runAt not a date', body: { ...noop, runAt: 'tomorrow' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'runAt' },
  { name: 'runAt impossible date', body: { ...noop, runAt: '2030-02-30T25:61:00Z' },
    status: 422, code: 'VALIDATION_ERROR', field: 'runAt' },
  { name: 'priority 10', body: { ...noop, priority: 10 }, status: 422,
    code: 'VALIDATION_ERROR', field: 'priority' },
  { name: 'priority 2.5', body: { ...noop, priority: 2.5 }, status: 422,
    code: 'VALIDATION_ERROR', field: 'priority' },
  { name: 'maxAttempts 0', body: { ...noop, maxAttempts: 0 }, status: 422,
    code: 'VALIDATION_ERROR', field: 'maxAttempts' },
  { name: 'maxAttempts a string', body: { ...noop, maxAttempts: '3' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'maxAttempts' },
  { name: 'timeoutSeconds 0', body: { ...noop, timeoutSeconds: 0 }, status: 422,
    code: 'VALIDATION_ERROR', field: 'timeoutSeconds' },
  { name: 'queue with bad characters', body: { ...noop, queue: 'bad queue!' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'queue' },
  { name: 'queue of 65 characters', body: { ...noop, queue: 'q'.repeat(65) }, status: 422,
    code: 'VALIDATION_ERROR', field: 'queue' },
  { name: 'queue hash-tag injection', body: { ...noop, queue: 'a}:ready' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'queue' },
  { name: 'unknown top-level field', body: { ...noop, colour: 'red' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'colour' },
  { name: 'Idempotency-Key too long', body: noop, headers: { 'Idempotency-Key': 'k'.repeat(1000) },
    status: 422, code: 'VALIDATION_ERROR', field: 'Idempotency-Key' },
  { name: 'body over 1 MiB', status: 413, code: 'PAYLOAD_TOO_LARGE',
    body: JSON.stringify({ type: 'noop', input: { pad: 'x'.repeat(1024 * 1024 + 10) } }) },
  { name: 'Content-Type text/plain', body: JSON.stringify(noop),
    headers: { 'Content-Type': 'text/plain' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'Content-Type application/x-www-form-urlencoded', body: 'type=noop',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'no Authorization', body: noop, token: null, status: 401, code: 'UNAUTHORIZED' },
  { name: 'wrong token', body: noop, token: 'not-the-token', status: 401, code: 'UNAUTHORIZED' },
  { name: 'Basic instead of Bearer', body: noop, token: null,
    headers: { Authorization: 'Basic b3BlcmF0b3I6eA==' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'no token on GET /v1/jobs/{id}', method: 'GET', path: '/v1/jobs/{id}', token: null,
    status: 401, code: 'UNAUTHORIZED' },
  { name: 'unknown route', method: 'GET', path: '/v1/nope', status: 404, code: 'NOT_FOUND' },
  { name: 'unknown route under /api/v1', method: 'POST', path: '/api/v1/nope', body: noop,
    status: 404, code: 'NOT_FOUND' },
  { name: 'PUT /v1/jobs', method: 'PUT', path: '/v1/jobs', body: noop, status: 405,
    code: 'METHOD_NOT_ALLOWED',
    check: (r) => {
      const allow = (r.headers.allow || '').split(/\s*,\s*/);
      assert.ok(allow.includes('GET') && allow.includes('POST'), `Allow: ${r.headers.allow}`);
      assert.ok(!allow.includes('PUT'), `Allow: ${r.headers.allow}`);
    } },
  { name: 'PATCH /v1/jobs/{id}', method: 'PATCH', path: '/v1/jobs/{id}', body: noop,
    status: 405, code: 'METHOD_NOT_ALLOWED',
    check: (r) => assert.match(r.headers.allow || '', /DELETE/, `Allow: ${r.headers.allow}`) },
  { name: 'GET /v1/jobs/not-an-id', method: 'GET', path: '/v1/jobs/not-an-id', status: 404,
    code: 'NOT_FOUND' },
  { name: 'GET unknown job id', method: 'GET', path: `/v1/jobs/${UNKNOWN_ID}`, status: 404,
    code: 'NOT_FOUND' },
  { name: 'DELETE unknown job id', method: 'DELETE', path: `/v1/jobs/${UNKNOWN_ID}`,
    status: 404, code: 'NOT_FOUND' },
  { name: 'retry a queued job', method: 'POST', path: '/v1/jobs/{id}/retry', status: 409,
    code: 'CONFLICT' },
  { name: 'GET /v1/jobs?limit=0', method: 'GET', path: '/v1/jobs?limit=0', status: 422,
    code: 'VALIDATION_ERROR', field: 'limit' },
  { name: 'GET /v1/jobs?limit=abc', method: 'GET', path: '/v1/jobs?limit=abc', status: 422,
    code: 'VALIDATION_ERROR', field: 'limit' },
  { name: 'GET /v1/jobs?status=bogus', method: 'GET', path: '/v1/jobs?status=bogus',
    status: 422, code: 'VALIDATION_ERROR', field: 'status' },
  { name: 'GET /v1/jobs?cursor=garbage', method: 'GET', path: '/v1/jobs?cursor=garbage',
    status: 422, code: 'VALIDATION_ERROR', field: 'cursor' },
  { name: 'GET /v1/jobs/{id}?wait=abc', method: 'GET', path: '/v1/jobs/{id}?wait=abc',
    status: 422, code: 'VALIDATION_ERROR', field: 'wait' },
  { name: 'GET /v1/jobs/{id}?wait=-1', method: 'GET', path: '/v1/jobs/{id}?wait=-1',
    status: 422, code: 'VALIDATION_ERROR', field: 'wait' },
  // last, as it has crashed the api: nesting beyond any JSON parser's depth limit (400),
  // or refused by a depth check (422); a request thread's stack must not overflow
  { name: 'JSON nested 100k deep', status: 400, code: 'INVALID_REQUEST',
    alt: [[422, 'VALIDATION_ERROR']], body: deep(100000) },
];

// Everything the bad requests could have changed.
async function snapshot(s) {
  const { items } = await s.listAll();
  return {
    jobs: items.map((j) => `${j.id} ${j.status} ${j.updatedAt}`).sort(),
    keys: await s.countKeys(),
    ready: await s.redis('ZCARD', s.queueKey('default', 'ready')),
  };
}

test(`${CASES.length} malformed requests: exact status, code and envelope; nothing changes`,
  { timeout: 90000 }, (t) => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    assert.ok(CASES.length >= 20);
    const job = await s.enqueueJob(noop);
    const before = await snapshot(s);
    assert.equal(before.jobs.length, 1);
    for (const c of CASES) {
      await t.test(c.name, async () => {
        const path = (c.path || '/v1/jobs').replace('{id}', job.id);
        const r = await s.api(c.method || 'POST', path,
          { body: c.body, headers: c.headers, token: c.token });
        const [status, code] = (c.alt || []).find(([st]) => st === r.status) ||
          [c.status, c.code];
        assertError(assert, r, status, code, c.field);
        if (c.check) c.check(r);
        assert.deepEqual(await snapshot(s), before, 'nothing changed');
      });
    }
    // the api survived all of it
    assert.equal((await s.api('GET', '/healthz', { token: null })).status, 200);
  }));

test('well-formed variants are accepted: charset in Content-Type, the /api alias',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const a = await s.api('POST', '/v1/jobs', { body: noop,
      headers: { 'Content-Type': 'application/json; charset=utf-8' } });
    assert.equal(a.status, 202, a.text);
    const b = await s.api('POST', '/api/jobs', { body: noop });
    assert.equal(b.status, 202, b.text);
    assert.equal((await s.listAll()).items.length, 2);
  }));

test('JSON nested 1000 deep (within parser limits): accepted or refused, the api survives',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const r = await s.api('POST', '/v1/jobs', { body: deep(1000) }).catch((err) => ({ err }));
    assert.ok(!r.err, `no answer: ${r.err && r.err.message}`);
    assert.ok([202, 400, 422].includes(r.status), `${r.status} ${r.text.slice(0, 300)}`);
    assert.ok(s.apiProc.alive, `api ${s.apiProc.describeExit()}`);
    assert.equal((await s.api('GET', '/healthz', { token: null })).status, 200);
  }));
