'use strict';
// Rate limits: fixed windows counted in Redis, shared by every api process; per user (JWT),
// per API key, per client IP on sign-up/sign-in ("auth") and on refresh ("ip"). Headers on
// every limited response, 429 RATE_LIMITED past the limit with nothing done. Bad tokens,
// the operator token and /healthz are never counted.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { withStack, sleep, assertError } = require('./lib/stack');
const A = require('./lib/accounts');

const WINDOW = 60;
const LIMIT_HEADERS = ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset',
  'ratelimit-policy', 'ratelimit'];

// Stack options: cheap hashing, high limits unless `env` sets them.
const opts = (env) => ({ workers: 0, schedulers: 0, env: { ...A.ACCOUNTS_ENV, ...env } });

// Sends one request (through client c, a stack or an extra api) and returns the response
// with sentAt/answeredAt (ms), for the X-RateLimit-Reset bounds.
async function timed(c, method, path, o) {
  const sentAt = Date.now();
  const r = await c.api(method, path, o);
  return { ...r, sentAt, answeredAt: Date.now() };
}

// Asserts the five rate-limit headers of r: bucket `name` of `limit` per `window` seconds,
// `remaining` left after this request; the reset is an epoch second after the request was
// sent and at most one window after it was answered. Returns the reset (epoch s).
function assertLimitHeaders(r, { name, limit, remaining, window = WINDOW }) {
  const ctx = `${r.status} ${JSON.stringify(Object.fromEntries(LIMIT_HEADERS.map((h) =>
    [h, r.headers[h]])))}`;
  assert.equal(r.headers['x-ratelimit-limit'], String(limit), `X-RateLimit-Limit: ${ctx}`);
  assert.equal(r.headers['x-ratelimit-remaining'], String(remaining),
    `X-RateLimit-Remaining: ${ctx}`);
  const reset = r.headers['x-ratelimit-reset'];
  assert.match(reset || '', /^\d+$/, `X-RateLimit-Reset is epoch seconds: ${ctx}`);
  assert.ok(Number(reset) * 1000 > r.sentAt, `X-RateLimit-Reset in the future: ${ctx}`);
  assert.ok(Number(reset) <= Math.ceil(r.answeredAt / 1000) + window,
    `X-RateLimit-Reset within one window: ${ctx}`);
  assert.equal(r.headers['ratelimit-policy'], `"${name}";q=${limit};w=${window}`,
    `RateLimit-Policy: ${ctx}`);
  const m = /^"([a-z]+)";r=(\d+);t=(\d+)$/.exec(r.headers.ratelimit || '');
  assert.ok(m, `RateLimit: ${ctx}`);
  assert.equal(m[1], name, `RateLimit name: ${ctx}`);
  assert.equal(Number(m[2]), remaining, `RateLimit r: ${ctx}`);
  assert.ok(Number(m[3]) >= 1 && Number(m[3]) <= window, `RateLimit t in 1..window: ${ctx}`);
  return Number(reset);
}

// Asserts a 429 RATE_LIMITED of a bucket of `limit`: Retry-After ≥ 1 (and ≤ the window),
// details {limit, windowSeconds, retryAfter}, headers with nothing remaining.
function assertLimited(r, { name, limit, window = WINDOW }) {
  assertError(assert, r, 429, 'RATE_LIMITED');
  const after = r.headers['retry-after'];
  assert.match(after || '', /^\d+$/, `Retry-After delta-seconds: ${after}`);
  assert.ok(Number(after) >= 1 && Number(after) <= window, `Retry-After ${after}`);
  assert.deepEqual(r.json.error.details, { limit, windowSeconds: window,
    retryAfter: Number(after) }, 'details');
  assertLimitHeaders(r, { name, limit, remaining: 0, window });
  return Number(after);
}

const noLimitHeaders = (r, what) => {
  for (const h of LIMIT_HEADERS) assert.ok(!(h in r.headers), `${what}: no ${h} header`);
};

test('per-user limit 7 across two api processes: 7 requests succeed (Remaining 6..0, one ' +
  'window), the 8th and 9th → 429 with Retry-After, and create no job',
{ timeout: 60000 }, () => withStack(opts({ CONVEYOR_RATE_LIMIT_USER: '7' }), async (s) => {
  const api2 = await s.startExtraApi();
  const a = await A.newUser(s);
  const clients = [s, api2];
  const resets = [];
  for (let i = 1; i <= 7; i++) {
    const r = await timed(clients[i % 2], 'POST', '/v1/jobs', { token: a.access,
      body: { type: 'noop' } });
    assert.equal(r.status, 202, `request ${i}: ${r.text}`);
    resets.push(assertLimitHeaders(r, { name: 'user', limit: 7, remaining: 7 - i }));
  }
  // one fixed window, started by the first request, seen alike by both processes
  assert.ok(Math.max(...resets) - Math.min(...resets) <= 1, `resets: ${resets.join(' ')}`);

  for (const [i, c] of [[8, api2], [9, s]]) {
    const r = await timed(c, 'POST', '/v1/jobs', { token: a.access, body: { type: 'noop' } });
    assertLimited(r, { name: 'user', limit: 7 });
    assert.ok(Math.abs(Number(r.headers['x-ratelimit-reset']) - resets[0]) <= 1,
      `request ${i}: the same window`);
  }
  // nothing done: the operator (not limited) counts exactly 7 jobs of the user
  const { items } = await s.listAll(`owner=${a.user.id}`);
  assert.equal(items.length, 7, 'the refused POSTs created no job');
  // every route of the user shares the bucket
  assertLimited(await timed(s, 'GET', '/v1/users/me', { token: a.access }),
    { name: 'user', limit: 7 });
  // another user has a bucket of its own
  const b = await A.newUser(s);
  const rb = await timed(api2, 'GET', '/v1/users/me', { token: b.access });
  assert.equal(rb.status, 200, rb.text);
  assertLimitHeaders(rb, { name: 'user', limit: 7, remaining: 6 });
}));

test('refused credentials (revoked session, wrong secret, tampered, expired) → 401 and do ' +
  'not use the user\'s requests',
{ timeout: 60000 }, () => withStack(opts({ CONVEYOR_RATE_LIMIT_USER: '7' }), async (s) => {
  const a = await A.newUser(s);
  const second = await A.login(s, a.email, a.password);
  const out = await timed(s, 'POST', '/v1/auth/logout', { token: a.access });
  assert.equal(out.status, 204, out.text);
  assertLimitHeaders(out, { name: 'user', limit: 7, remaining: 6 }); // logout is request 1

  const claims = A.decodeJwt(second.accessToken).payload;
  const now = A.nowSeconds();
  const [h, , sig] = second.accessToken.split('.');
  const bad = [
    ['revoked session', a.access],
    ['wrong secret', A.signJwt(claims, crypto.randomBytes(32).toString('hex'))],
    ['tampered', `${h}.${A.b64json({ ...claims, jti: 'other' })}.${sig}`],
    ['expired', A.signJwt({ ...claims, iat: now - 100, exp: now - 10 }, s.jwtSecret)],
    ['alg none', `${A.b64json({ alg: 'none', typ: 'JWT' })}.${A.b64json(claims)}.`],
  ];
  for (let round = 0; round < 3; round++) {
    for (const [what, token] of bad) {
      const r = await s.api('GET', '/v1/users/me', { token });
      assert.equal(r.status, 401, `${what}: ${r.text}`);
      assertError(assert, r, 401, 'UNAUTHORIZED');
    }
  }
  // 15 refused requests later the user still has its 6 requests, and then no more
  for (let left = 5; left >= 0; left--) {
    const r = await timed(s, 'GET', '/v1/users/me', { token: second.accessToken });
    assert.equal(r.status, 200, `remaining ${left}: ${r.text}`);
    assertLimitHeaders(r, { name: 'user', limit: 7, remaining: left });
  }
  assertLimited(await timed(s, 'GET', '/v1/users/me', { token: second.accessToken }),
    { name: 'user', limit: 7 });
}));

test('an API key has its own bucket (per key), separate from its user\'s',
{ timeout: 60000 }, () => withStack(opts({ CONVEYOR_RATE_LIMIT_USER: '7',
  CONVEYOR_RATE_LIMIT_API_KEY: '4' }), async (s) => {
  const api2 = await s.startExtraApi();
  const a = await A.newUser(s);
  const k1 = await A.createApiKey(s, a.access, { name: 'one' }); // user request 1
  const k2 = await A.createApiKey(s, a.access, { name: 'two' }); // user request 2
  for (let i = 1; i <= 4; i++) {
    const r = await timed(i % 2 ? s : api2, 'POST', '/v1/jobs', { token: k1.key,
      body: { type: 'noop' } });
    assert.equal(r.status, 202, `key request ${i}: ${r.text}`);
    assertLimitHeaders(r, { name: 'apikey', limit: 4, remaining: 4 - i });
  }
  assertLimited(await timed(s, 'POST', '/v1/jobs', { token: k1.key, body: { type: 'noop' } }),
    { name: 'apikey', limit: 4 });
  // the query-string form is the same key, the same bucket
  assertLimited(await timed(api2, 'GET', '/v1/users/me', { token: null,
    query: { api_key: k1.key } }), { name: 'apikey', limit: 4 });
  assert.equal((await s.listAll(`owner=${a.user.id}`)).items.length, 4, 'no 5th job');

  const r2 = await timed(api2, 'GET', '/v1/users/me', { token: k2.key });
  assert.equal(r2.status, 200, `the other key: ${r2.text}`);
  assertLimitHeaders(r2, { name: 'apikey', limit: 4, remaining: 3 });
  // the user's JWT bucket counted only its own two requests
  const rj = await timed(s, 'GET', '/v1/users/me', { token: a.access });
  assert.equal(rj.status, 200, `JWT: ${rj.text}`);
  assertLimitHeaders(rj, { name: 'user', limit: 7, remaining: 4 });
}));

test('per-IP auth limit 5 on register, login (right or wrong password) and anonymous POST ' +
  '/v1/users, counted across two api processes; the 6th and 7th → 429 and create nothing',
{ timeout: 60000 }, () => withStack(opts({ CONVEYOR_RATE_LIMIT_AUTH: '5' }), async (s) => {
  const api2 = await s.startExtraApi();
  const email = A.newEmail();
  const password = A.newPassword();
  const steps = [
    [s, '/v1/auth/register', { email, password }, 201],
    [api2, '/v1/auth/login', { email, password }, 200],
    [s, '/v1/auth/login', { email, password: `${password}x` }, 401],
    [api2, '/v1/users', { email: A.newEmail(), password }, 201],
    [s, '/v1/auth/login', { email, password }, 200],
  ];
  let signIn;
  for (const [i, [c, path, body, status]] of steps.entries()) {
    const r = await timed(c, 'POST', path, { token: null, body });
    assert.equal(r.status, status, `auth request ${i + 1} ${path}: ${r.text}`);
    assertLimitHeaders(r, { name: 'auth', limit: 5, remaining: 4 - i });
    if (status === 200) signIn = r.json;
  }
  const users = await s.psql(`SELECT count(*) FROM "${s.schema}".users`);
  const sessions = await s.psql(`SELECT count(*) FROM "${s.schema}".sessions`);
  const sixth = await timed(api2, 'POST', '/v1/auth/login', { token: null,
    body: { email, password } });
  assertLimited(sixth, { name: 'auth', limit: 5 });
  assert.ok(!('accessToken' in sixth.json), 'no token past the limit');
  assertLimited(await timed(s, 'POST', '/v1/auth/register', { token: null,
    body: { email: A.newEmail(), password } }), { name: 'auth', limit: 5 });
  assertLimited(await timed(api2, 'POST', '/v1/users', { token: null,
    body: { email: A.newEmail(), password } }), { name: 'auth', limit: 5 });
  assert.equal(await s.psql(`SELECT count(*) FROM "${s.schema}".users`), users, 'no user');
  assert.equal(await s.psql(`SELECT count(*) FROM "${s.schema}".sessions`), sessions,
    'no session');

  // other buckets are unaffected: the signed-in user, refresh (per IP, "ip"), the operator
  const meR = await timed(s, 'GET', '/v1/users/me', { token: signIn.accessToken });
  assert.equal(meR.status, 200, meR.text);
  assert.equal(meR.headers['ratelimit-policy'], '"user";q=100000;w=60');
  const ref = await timed(api2, 'POST', '/v1/auth/refresh', { token: null,
    body: { refreshToken: signIn.refreshToken } });
  assert.equal(ref.status, 200, `refresh: ${ref.text}`);
  assertLimitHeaders(ref, { name: 'ip', limit: 100000, remaining: 99999 });
  const byOp = await s.api('POST', '/v1/users', { body: { email: A.newEmail(), password } });
  assert.equal(byOp.status, 201, `the operator creates users past the auth limit: ${byOp.text}`);
  noLimitHeaders(byOp, 'operator POST /v1/users');

  // a signed-in user's credential brings no sign-up allowance of its own, nor does each
  // API key the user makes: POST /v1/users still counts per client address
  const before = await s.psql(`SELECT count(*) FROM "${s.schema}".users`);
  const key = await A.createApiKey(s, signIn.accessToken, { name: 'k' });
  for (const [what, token] of [['access token', signIn.accessToken], ['API key', key.key]]) {
    const r = await timed(api2, 'POST', '/v1/users', { token,
      body: { email: A.newEmail(), password } });
    assert.equal(r.status, 429, `POST /v1/users with a user's ${what}: ${r.text}`);
    assertLimited(r, { name: 'auth', limit: 5 });
  }
  assert.equal(await s.psql(`SELECT count(*) FROM "${s.schema}".users`), before, 'no user');
}));

test('per-IP limit on refresh (3): the 4th refresh → 429 and does not rotate the token; ' +
  'after Retry-After the window is new and it works',
{ timeout: 60000 }, () => withStack(opts({ CONVEYOR_RATE_LIMIT_IP: '3',
  CONVEYOR_RATE_LIMIT_WINDOW_SECONDS: '2' }), async (s) => {
  const a = await A.newUser(s);
  const refresh = (rt) => timed(s, 'POST', '/v1/auth/refresh', { token: null,
    body: { refreshToken: rt } });
  // three refreshes in one window, the 4th refused (if the 2 s window rolls over in the
  // middle, wait for a fresh one and start again)
  let rt = a.refresh;
  let r;
  for (let attempt = 1; ; attempt++) {
    const got = [];
    for (let i = 0; i < 4; i++) {
      got.push(r = await refresh(rt));
      if (r.status === 200) rt = r.json.refreshToken;
    }
    const seen = got.map((x) => `${x.status}/${x.headers['x-ratelimit-remaining']}`).join(' ');
    if (seen === '200/2 200/1 200/0 429/0') {
      got.slice(0, 3).forEach((x, i) => assertLimitHeaders(x,
        { name: 'ip', limit: 3, remaining: 2 - i, window: 2 }));
      break;
    }
    assert.ok(attempt < 3, `status/remaining: ${seen}`);
    await sleep(2100);
  }
  const after = assertLimited(r, { name: 'ip', limit: 3, window: 2 });
  await sleep(after * 1000 + 100);
  const again = await refresh(rt);
  assert.equal(again.status, 200, `the refused refresh token still works: ${again.text}`);
  assertLimitHeaders(again, { name: 'ip', limit: 3, remaining: 2, window: 2 });
}));

test('window of 2 s: past the limit → 429; after Retry-After a new window starts ' +
  '(Remaining limit-1)',
{ timeout: 60000 }, () => withStack(opts({ CONVEYOR_RATE_LIMIT_USER: '3',
  CONVEYOR_RATE_LIMIT_WINDOW_SECONDS: '2' }), async (s) => {
  const a = await A.newUser(s);
  const call = () => timed(s, 'GET', '/v1/users/me', { token: a.access });
  // three allowed in one window (if the 2 s window rolls over meanwhile, start again)
  let r;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const rs = [await call(), await call(), await call(), await call()];
    if (rs.map((x) => x.status).join() === '200,200,200,429') {
      rs.slice(0, 3).forEach((x, i) => assertLimitHeaders(x,
        { name: 'user', limit: 3, remaining: 2 - i, window: 2 }));
      r = rs[3];
      break;
    }
    assert.ok(attempt < 3, `statuses ${rs.map((x) => x.status).join()}`);
    await sleep(2100);
  }
  const after = assertLimited(r, { name: 'user', limit: 3, window: 2 });
  await sleep(after * 1000 + 100);
  const fresh = await call();
  assert.equal(fresh.status, 200, fresh.text);
  assertLimitHeaders(fresh, { name: 'user', limit: 3, remaining: 2, window: 2 });
}));

test('the operator token is never limited and gets no rate-limit headers; /healthz and ' +
  '/readyz are never limited',
{ timeout: 60000 }, () => withStack(opts({ CONVEYOR_RATE_LIMIT_USER: '1',
  CONVEYOR_RATE_LIMIT_AUTH: '1', CONVEYOR_RATE_LIMIT_IP: '1',
  CONVEYOR_RATE_LIMIT_API_KEY: '1' }), async (s) => {
  const api2 = await s.startExtraApi();
  for (let i = 0; i < 12; i++) {
    const c = i % 2 ? api2 : s;
    const q = await c.api('GET', '/v1/queues');
    assert.equal(q.status, 200, `operator GET /v1/queues #${i + 1}: ${q.text}`);
    noLimitHeaders(q, 'operator GET /v1/queues');
    const j = await c.api('POST', '/v1/jobs', { body: { type: 'noop' } });
    assert.equal(j.status, 202, `operator POST /v1/jobs #${i + 1}: ${j.text}`);
    noLimitHeaders(j, 'operator POST /v1/jobs');
  }
  // with the auth limit used up by one sign-up, health checks still answer
  const reg = await s.api('POST', '/v1/auth/register', { token: null,
    body: { email: A.newEmail(), password: A.newPassword() } });
  assert.equal(reg.status, 201, reg.text);
  assertLimited(await timed(s, 'POST', '/v1/auth/login', { token: null,
    body: { email: A.newEmail(), password: A.newPassword() } }), { name: 'auth', limit: 1 });
  for (let i = 0; i < 20; i++) {
    for (const path of ['/healthz', '/readyz']) {
      const r = await (i % 2 ? api2 : s).api('GET', path, { token: null });
      assert.equal(r.status, 200, `${path} #${i + 1}: ${r.text}`);
      noLimitHeaders(r, path);
    }
  }
}));
