'use strict';
// User accounts: sign-up, sign-in, sessions (refresh rotation, reuse, logout), hand-made
// JWTs, API keys, users/{id}, and who may see which jobs. The contract these tests hold
// the api to is the accounts section of the README (issue 3).
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { withStack, waitFor, assertError } = require('./lib/stack');
const A = require('./lib/accounts');

const OPTS = { workers: 0, schedulers: 0, env: A.ACCOUNTS_ENV };
const MESSAGE_BAD_LOGIN = 'invalid email or password';

const get = (s, path, token, opts = {}) => s.api('GET', path, { token, ...opts });
const me = (s, token, opts) => get(s, '/v1/users/me', token, opts);
const unauthorized = (r, what) => {
  assert.equal(r.status, 401, `${what}: ${r.status} ${r.text.slice(0, 300)}`);
  assertError(assert, r, 401, 'UNAUTHORIZED');
};
const usersTable = (s, t) => `"${s.schema}".${t}`;
const countRows = async (s, table, where = 'true') =>
  Number(await s.psql(`SELECT count(*) FROM ${usersTable(s, table)} WHERE ${where}`));

// The user object of the contract, with expected values for the keys of `want`.
function assertUser(u, want = {}) {
  assert.ok(u && typeof u === 'object', `user object: ${JSON.stringify(u)}`);
  assert.match(u.id, A.USER_ID_RE, 'user id');
  assert.equal(u.isActive, true, 'isActive');
  assert.deepEqual(u.preferences, {}, 'preferences');
  for (const [k, v] of Object.entries(want)) assert.deepEqual(u[k], v, `user.${k}`);
  for (const k of ['email', 'username', 'firstName', 'lastName', 'name', 'role']) {
    assert.ok(k in u, `user.${k} present (null when unset): ${JSON.stringify(u)}`);
  }
  assert.match(u.createdAt, A.TIME_MS_RE, 'createdAt');
  assert.match(u.updatedAt, A.TIME_MS_RE, 'updatedAt');
  for (const k of Object.keys(u)) {
    assert.doesNotMatch(k, /pass|hash|secret/i, `user carries no secret: ${k}`);
  }
}

// The sign-in answer (login and refresh share it).
function assertSignIn(j, user, ttl) {
  assert.equal(typeof j.accessToken, 'string');
  assert.equal(j.token, j.accessToken, 'token = accessToken');
  assert.match(j.refreshToken, /^rt_[A-Za-z0-9_-]+$/, 'refreshToken');
  assert.equal(j.tokenType, 'Bearer');
  assert.equal(j.expiresIn, ttl, 'expiresIn = the access token lifetime');
  assert.deepEqual(j.user, user, 'user');
}

test('register → login → GET /v1/users/me, /profile, /{id} and the /api aliases; claims; ' +
  'no credential → 401 with WWW-Authenticate; operator → 403',
{ timeout: 60000 }, () => withStack({ ...OPTS, env: { ...A.ACCOUNTS_ENV,
  CONVEYOR_ACCESS_TOKEN_TTL_SECONDS: '1800' } }, async (s) => {
  const email = `Ada.${crypto.randomBytes(4).toString('hex')}@Example.COM`;
  const password = A.newPassword();
  const reg = await s.api('POST', '/v1/auth/register', { token: null,
    body: { email, password, firstName: 'Ada', lastName: 'Lovelace' } });
  assert.equal(reg.status, 201, reg.text);
  const u = reg.json;
  // email as given (case kept); name derived from first and last
  assertUser(u, { email, username: null, firstName: 'Ada', lastName: 'Lovelace',
    name: 'Ada Lovelace', role: 'user' });
  assert.ok(!reg.text.includes(password), 'the password is not echoed');
  const row = await s.psql(`SELECT u::text FROM ${usersTable(s, 'users')} u ` +
    `WHERE id = '${u.id}'`);
  assert.ok(row.length > 0, 'the user row exists');
  assert.ok(!row.includes(password), 'the password is not stored in clear');

  const l = await s.api('POST', '/v1/auth/login', { token: null, body: { email, password } });
  assert.equal(l.status, 200, l.text);
  assertSignIn(l.json, u, 1800);
  const jwt = A.decodeJwt(l.json.accessToken);
  assert.deepEqual(jwt.header, { alg: 'HS256', typ: 'JWT' });
  const c = jwt.payload;
  assert.equal(c.sub, u.id, 'sub');
  assert.equal(c.role, 'user', 'role');
  assert.equal(c.iss, 'conveyor', 'iss');
  assert.ok(typeof c.sid === 'string' && c.sid.length > 0, 'sid');
  assert.ok(typeof c.jti === 'string' && c.jti.length > 0, 'jti');
  assert.ok(Number.isInteger(c.iat) && Number.isInteger(c.exp), 'iat, exp integers');
  assert.equal(c.exp - c.iat, 1800, 'exp = iat + CONVEYOR_ACCESS_TOKEN_TTL_SECONDS');
  assert.ok(Math.abs(c.iat - A.nowSeconds()) < 300, `iat ${c.iat} is now (same host)`);

  const token = l.json.accessToken;
  for (const path of ['/v1/users/me', '/v1/users/profile', `/v1/users/${u.id}`,
    '/api/v1/users/me', '/api/v1/users/profile', '/api/users/me', `/api/v1/users/${u.id}`]) {
    const r = await get(s, path, token);
    assert.equal(r.status, 200, `${path}: ${r.text}`);
    assert.deepEqual(r.json, u, `${path} is the caller`);
  }
  // the access token in the query string instead of the header
  const q = await me(s, null, { query: { token } });
  assert.equal(q.status, 200, `?token=: ${q.text}`);
  assert.equal(q.json.id, u.id);

  const anon = await me(s, null);
  unauthorized(anon, 'no credential');
  assert.match(anon.headers['www-authenticate'] || '', /^Bearer/i, 'WWW-Authenticate: Bearer');
  // the operator token is an admin credential but not a user
  assertError(assert, await me(s), 403, 'FORBIDDEN');

  // a second sign-in is a second session; both work
  const l2 = await A.login(s, email, password);
  assert.notEqual(A.decodeJwt(l2.accessToken).payload.sid, c.sid, 'a new session');
  assert.notEqual(l2.refreshToken, l.json.refreshToken);
  assert.equal((await me(s, l2.accessToken)).status, 200);
  assert.equal((await me(s, token)).status, 200, 'the first session still works');
  assert.equal(await A.login(s, email, password).then((x) => x.user.id), u.id);
}));

test('register variants: given name kept, no names → nulls, username; POST /v1/users ' +
  'without credentials is register',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const named = await A.registerUser(s, { name: 'The Countess', firstName: 'Ada' });
  assertUser(named, { name: 'The Countess', firstName: 'Ada', lastName: null, role: 'user' });
  const bare = await A.registerUser(s, {});
  assertUser(bare, { username: null, firstName: null, lastName: null, name: null });
  const withUsername = await A.registerUser(s, { username: 'ada_l.1-x' });
  assert.equal(withUsername.username, 'ada_l.1-x');

  const email = A.newEmail();
  const password = A.newPassword();
  const r = await s.api('POST', '/v1/users', { token: null, body: { email, password } });
  assert.equal(r.status, 201, r.text);
  assertUser(r.json, { email, role: 'user' });
  assert.equal((await A.login(s, email, password)).user.id, r.json.id, 'it signs in');
  assert.equal(await countRows(s, 'users'), 4);
}));

test('email taken in another case → 409 field email; username taken in another case → 409 ' +
  'field username; the first account is untouched',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const a = await A.newUser(s, { username: 'Grace.H' });
  const otherPassword = A.newPassword();
  for (const path of ['/v1/auth/register', '/v1/users']) {
    const dup = await s.api('POST', path, { token: null,
      body: { email: a.email.toUpperCase(), password: otherPassword } });
    assertError(assert, dup, 409, 'CONFLICT', 'email');
  }
  const dupName = await s.api('POST', '/v1/auth/register', { token: null,
    body: { email: A.newEmail(), password: otherPassword, username: 'gRACE.h' } });
  assertError(assert, dupName, 409, 'CONFLICT', 'username');
  assert.equal(await countRows(s, 'users'), 1, 'no second account');
  // the password was not replaced
  assert.equal((await A.login(s, a.email, a.password)).user.id, a.user.id);
  const r = await s.api('POST', '/v1/auth/login', { token: null,
    body: { email: a.email, password: otherPassword } });
  unauthorized(r, 'the duplicate\'s password');
}));

test('wrong password and unknown email: both 401 "invalid email or password", no token, ' +
  'no session',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const a = await A.newUser(s);
  const sessions = await countRows(s, 'sessions');
  const wrong = await s.api('POST', '/v1/auth/login', { token: null,
    body: { email: a.email, password: `${a.password}x` } });
  const unknown = await s.api('POST', '/v1/auth/login', { token: null,
    body: { email: A.newEmail(), password: a.password } });
  unauthorized(wrong, 'wrong password');
  unauthorized(unknown, 'unknown email');
  assert.equal(wrong.json.error.message, unknown.json.error.message,
    'one message: the answer does not tell whether the address has an account');
  assert.equal(wrong.json.error.message, MESSAGE_BAD_LOGIN);
  for (const r of [wrong, unknown]) assert.ok(!('accessToken' in r.json), 'no token');
  assert.equal(await countRows(s, 'sessions'), sessions, 'no session created');
  assert.equal((await A.login(s, a.email, a.password)).user.id, a.user.id, 'right one works');
}));

test('refresh rotates (same sid, old refresh token → 401); reusing a rotated one revokes the ' +
  'whole family (newest refresh and access tokens → 401), not other sessions',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const a = await A.newUser(s);
  const other = await A.login(s, a.email, a.password); // a second, unrelated session
  const refresh = (rt) => s.api('POST', '/v1/auth/refresh', { token: null,
    body: { refreshToken: rt } });
  const sid0 = A.decodeJwt(a.access).payload.sid;

  const r1 = await refresh(a.refresh);
  assert.equal(r1.status, 200, r1.text);
  assertSignIn(r1.json, a.user, 3600);
  assert.notEqual(r1.json.refreshToken, a.refresh, 'a new refresh token');
  assert.equal(A.decodeJwt(r1.json.accessToken).payload.sid, sid0, 'the same session');
  assert.equal((await me(s, r1.json.accessToken)).status, 200, 'new access token works');
  assert.equal((await me(s, a.access)).status, 200, 'rotation alone revokes no access token');

  const r2 = await refresh(r1.json.refreshToken);
  assert.equal(r2.status, 200, r2.text);
  const newest = r2.json;

  // reuse of the first (already rotated) refresh token: 401, and the family is revoked
  unauthorized(await refresh(a.refresh), 'rotated refresh token presented again');
  unauthorized(await refresh(newest.refreshToken), 'the newest refresh token of the family');
  unauthorized(await me(s, newest.accessToken), 'the newest access token of the family');
  unauthorized(await me(s, r1.json.accessToken), 'an older access token of the family');
  unauthorized(await me(s, a.access), 'the first access token of the family');
  // only that family: the user's other session lives on
  assert.equal((await me(s, other.accessToken)).status, 200, 'other session: access');
  const o = await refresh(other.refreshToken);
  assert.equal(o.status, 200, `other session: refresh ${o.text}`);
  assert.equal(A.decodeJwt(o.json.accessToken).payload.sid,
    A.decodeJwt(other.accessToken).payload.sid);

  unauthorized(await refresh(`rt_${crypto.randomBytes(32).toString('base64url')}`),
    'an unknown refresh token');
}));

test('logout → 204; that session\'s access and refresh tokens → 401 at once on every api ' +
  'process; other sessions live; API key or operator token → 400',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const api2 = await s.startExtraApi();
  const a = await A.newUser(s);
  const other = await A.login(s, a.email, a.password);
  assert.equal((await me(api2, a.access)).status, 200, 'works on the second process first');

  const out = await s.api('POST', '/v1/auth/logout', { token: a.access });
  assert.equal(out.status, 204, out.text);
  assert.equal(out.text, '', '204 has no body');
  unauthorized(await me(s, a.access), 'after logout, same process');
  unauthorized(await me(api2, a.access), 'after logout, the other process');
  unauthorized(await s.api('POST', '/v1/auth/refresh', { token: null,
    body: { refreshToken: a.refresh } }), 'the session\'s refresh token');
  unauthorized(await s.api('POST', '/v1/auth/logout', { token: a.access }), 'logout again');
  assert.equal((await me(api2, other.accessToken)).status, 200, 'another session lives');

  const key = await A.createApiKey(s, other.accessToken, { name: 'k' });
  assertError(assert, await s.api('POST', '/v1/auth/logout', { token: key.key }), 400,
    'INVALID_REQUEST');
  assertError(assert, await s.api('POST', '/v1/auth/logout'), 400, 'INVALID_REQUEST');
  assertError(assert, await s.api('POST', '/v1/auth/logout', { token: null }), 401,
    'UNAUTHORIZED');
  assert.equal((await me(s, key.key)).status, 200, 'the key survived its logout attempt');
  assert.equal((await me(s, other.accessToken)).status, 200);
}));

test('hand-made JWTs: re-signed copies of a real token work; expired, tampered, alg none, ' +
  'HS512, wrong secret and malformed ones → 401; a revoked sid → 401 whatever the signature',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const a = await A.newUser(s);
  const real = A.decodeJwt(a.access).payload;
  const now = A.nowSeconds();
  const sign = (p, secret = s.jwtSecret, header) => A.signJwt(p, secret, header);

  // the helper signs as the server does: a byte-for-byte copy of the real token's claims,
  // and variants with a new jti / a later exp, are valid tokens of the user
  for (const [what, p] of [['same claims', real], ['new jti', { ...real, jti: 'hand-made-1' }],
    ['exp in 10 min', { ...real, iat: now, exp: now + 600 }]]) {
    const r = await me(s, sign(p));
    assert.equal(r.status, 200, `${what}: ${r.text}`);
    assert.equal(r.json.id, a.user.id, what);
  }

  const bad = {
    'expired (exp 5 s ago)': sign({ ...real, iat: now - 120, exp: now - 5 }),
    'expired by an hour': sign({ ...real, iat: now - 7200, exp: now - 3600 }),
    'wrong secret': sign(real, crypto.randomBytes(32).toString('hex')),
    'secret with one byte changed': sign(real, `${s.jwtSecret.slice(0, -1)}` +
      `${s.jwtSecret.endsWith('0') ? '1' : '0'}`),
    'alg none, no signature': `${A.b64json({ alg: 'none', typ: 'JWT' })}.${A.b64json(real)}.`,
    'alg none with the real signature': `${A.b64json({ alg: 'none', typ: 'JWT' })}.` +
      `${A.b64json(real)}.${a.access.split('.')[2]}`,
    'alg HS512, right secret': sign(real, s.jwtSecret, { alg: 'HS512', typ: 'JWT' }),
    'payload tampered (role admin), signature kept': (() => {
      const [h, , sig] = a.access.split('.');
      return `${h}.${A.b64json({ ...real, role: 'admin' })}.${sig}`;
    })(),
    'payload tampered (exp later), signature kept': (() => {
      const [h, , sig] = a.access.split('.');
      return `${h}.${A.b64json({ ...real, exp: real.exp + 1 })}.${sig}`;
    })(),
    'signature of another token': `${sign({ ...real, jti: 'x' }).split('.').slice(0, 2)
      .join('.')}.${a.access.split('.')[2]}`,
    'signature truncated': a.access.slice(0, -4),
    'two parts': a.access.split('.').slice(0, 2).join('.'),
    'four parts': `${a.access}.x`,
    'payload not JSON': `${a.access.split('.')[0]}.${Buffer.from('nope').toString('base64url')}` +
      `.${crypto.createHmac('sha256', s.jwtSecret).update(`${a.access.split('.')[0]}.` +
        `${Buffer.from('nope').toString('base64url')}`).digest('base64url')}`,
    'not a token': 'abc',
  };
  for (const [what, token] of Object.entries(bad)) {
    unauthorized(await me(s, token), what);
    unauthorized(await me(s, null, { query: { token } }), `${what} (?token=)`);
  }
  // the tampered admin claim opened nothing admin either
  unauthorized(await get(s, '/v1/queues', bad['payload tampered (role admin), signature kept']),
    'tampered admin token on GET /v1/queues');
  assert.equal((await me(s, a.access)).status, 200, 'the real token still works');

  // revocation is by session: after logout even a freshly signed token of that sid fails
  const fresh = sign({ ...real, jti: 'after-logout', iat: now, exp: now + 600 });
  assert.equal((await s.api('POST', '/v1/auth/logout', { token: a.access })).status, 204);
  unauthorized(await me(s, fresh), 'hand-signed token of a logged-out session');
}));

test('API keys: created (key once, ak_live_ + 40 base62), listed without the key, used via ' +
  'header, ?api_key= and ?token=; lastUsedAt set; keys cannot manage keys; revoke → 401',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const a = await A.newUser(s);
  const c = await s.api('POST', '/v1/auth/api-keys', { token: a.access, body: { name: 'ci' } });
  assert.equal(c.status, 201, c.text);
  const k = c.json;
  assert.match(k.id, A.KEY_ID_RE, 'key id');
  assert.match(k.key, A.API_KEY_RE, 'the key');
  assert.equal(k.name, 'ci');
  assert.equal(k.prefix, k.key.slice(0, 12), 'prefix = first 12 characters');
  assert.equal(k.status, 'active');
  assert.equal(k.expiresAt, null);
  assert.equal(k.lastUsedAt, null);
  assert.match(k.createdAt, A.TIME_MS_RE);
  const k2 = await A.createApiKey(s, a.access, {});
  assert.equal(k2.name, null, 'name is optional');
  assert.notEqual(k2.key, k.key);
  const stored = await s.psql(`SELECT string_agg(k::text, ' ') FROM ` +
    `${usersTable(s, 'api_keys')} k`);
  assert.ok(stored.length > 0, 'the key rows exist');
  assert.ok(!stored.includes(k.key.slice(8)) && !stored.includes(k2.key.slice(8)),
    'keys are not stored in clear');

  const list = await get(s, '/v1/auth/api-keys', a.access);
  assert.equal(list.status, 200, list.text);
  assert.equal(list.json.hasMore, false);
  assert.deepEqual(list.json.data.map((x) => x.id), [k2.id, k.id], 'newest first');
  assert.ok(!list.text.includes(k.key) && !list.text.includes(k2.key), 'keys shown once');
  const { key: _shown, ...listed } = k;
  assert.deepEqual(list.json.data[1], listed, 'listing = creation answer without `key`');

  // used three ways; each answers as the user
  for (const [what, opts] of [['header', { token: k.key }],
    ['?api_key=', { token: null, query: { api_key: k.key } }],
    ['?token=', { token: null, query: { token: k.key } }]]) {
    const r = await me(s, opts.token, opts);
    assert.equal(r.status, 200, `${what}: ${r.text}`);
    assert.equal(r.json.id, a.user.id, what);
  }
  // the header wins over the query string
  unauthorized(await me(s, 'not-a-credential', { query: { api_key: k.key } }),
    'bad header + good ?api_key=');
  // the first use set lastUsedAt (within that request)
  const used = (await get(s, '/v1/auth/api-keys', a.access)).json.data.find((x) => x.id === k.id);
  assert.match(used.lastUsedAt || '', A.TIME_MS_RE, `lastUsedAt after use: ${used.lastUsedAt}`);
  assert.ok(Date.parse(used.lastUsedAt) >= Date.parse(k.createdAt), 'used after created');
  assert.equal((await get(s, '/v1/auth/api-keys', a.access)).json.data
    .find((x) => x.id === k2.id).lastUsedAt, null, 'the unused key has none');

  // a key works for jobs
  const job = await s.api('POST', '/v1/jobs', { token: k.key, body: { type: 'noop' } });
  assert.equal(job.status, 202, job.text);
  assert.equal((await get(s, `/v1/jobs/${job.json.id}`, a.access)).status, 200,
    'the key\'s job is the user\'s');

  // keys cannot manage keys (JWT only), nor can the operator (not a user)
  assertError(assert, await s.api('POST', '/v1/auth/api-keys', { token: k.key, body: {} }), 403,
    'FORBIDDEN');
  assertError(assert, await get(s, '/v1/auth/api-keys', k.key), 403, 'FORBIDDEN');
  assertError(assert, await s.api('DELETE', `/v1/auth/api-keys/${k2.id}`, { token: k.key }),
    403, 'FORBIDDEN');
  assertError(assert, await s.api('POST', '/v1/auth/api-keys', { body: {} }), 403, 'FORBIDDEN');
  assert.equal(await countRows(s, 'api_keys'), 2, 'no key created by a key or the operator');

  // revoke
  const del = await s.api('DELETE', `/v1/auth/api-keys/${k.id}`, { token: a.access });
  assert.equal(del.status, 204, del.text);
  unauthorized(await me(s, k.key), 'revoked key, header');
  unauthorized(await me(s, null, { query: { api_key: k.key } }), 'revoked key, ?api_key=');
  assert.deepEqual((await get(s, '/v1/auth/api-keys', a.access)).json.data.map((x) => x.id),
    [k2.id], 'revoked keys are left out');
  assert.equal((await me(s, k2.key)).status, 200, 'the other key still works');
  assertError(assert, await s.api('DELETE', '/v1/auth/api-keys/key_0000000000000000000000',
    { token: a.access }), 404, 'NOT_FOUND');

  // another user's key id → 404, and the key lives
  const b = await A.newUser(s);
  assertError(assert, await s.api('DELETE', `/v1/auth/api-keys/${k2.id}`, { token: b.access }),
    404, 'NOT_FOUND');
  assert.deepEqual((await get(s, '/v1/auth/api-keys', b.access)).json.data, [],
    'b lists none of a\'s keys');
  assert.equal((await me(s, k2.key)).status, 200, 'a\'s key survived b\'s DELETE');
}));

test('API key expiry: expiresAt in the past → 422; a key expiring in 3 s works, then → 401 ' +
  'and is listed expired',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const a = await A.newUser(s);
  const past = await s.api('POST', '/v1/auth/api-keys', { token: a.access,
    body: { name: 'old', expiresAt: new Date(Date.now() - 60000).toISOString() } });
  assertError(assert, past, 422, 'VALIDATION_ERROR', 'expiresAt');
  assert.equal(await countRows(s, 'api_keys'), 0);

  const at = new Date(Date.now() + 3000);
  const k = await A.createApiKey(s, a.access, { name: 'short', expiresAt: at.toISOString() });
  assert.match(k.expiresAt, A.TIME_MS_RE);
  assert.ok(Math.abs(Date.parse(k.expiresAt) - at.getTime()) < 1000,
    `expiresAt ${k.expiresAt} is the one asked (${at.toISOString()})`);
  const before = await me(s, k.key);
  if (Date.now() < at.getTime()) { // answered before expiresAt (unless the host is very slow)
    assert.equal(before.status, 200, `before its expiry: ${before.text}`);
  }
  // bounded wait (expiresAt + 5 s): the key must then be refused. Server and test share the
  // host's clock: a refusal answered before expiresAt (less 1 s of rounding) is a bug.
  let answeredAt = 0;
  const refused = await waitFor(async () => {
    const r = await me(s, k.key);
    answeredAt = Date.now();
    if (r.status === 200) return null;
    return r;
  }, { timeout: at.getTime() + 5000 - Date.now(), interval: 200,
    what: 'the expired key to be refused' });
  assertError(assert, refused, 401, 'UNAUTHORIZED');
  assert.ok(answeredAt >= at.getTime() - 1000,
    `refused at ${new Date(answeredAt).toISOString()}, before its expiresAt ${k.expiresAt}`);
  const listed = (await get(s, '/v1/auth/api-keys', a.access)).json.data
    .find((x) => x.id === k.id);
  assert.ok(listed, 'an expired key is still listed (not revoked)');
  assert.equal(listed.status, 'expired');
}));

test('jobs are private: another user\'s job → 404 on GET, DELETE and retry (owner gets 409); ' +
  'listings show own jobs; ?owner= of another → 403; GET /v1/queues → 403 for a user',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const a = await A.newUser(s);
  const b = await A.newUser(s);
  const bJob = await s.api('POST', '/v1/jobs', { token: b.access, body: { type: 'noop' } });
  assert.equal(bJob.status, 202, bJob.text);
  const id = bJob.json.id;
  const aKey = await A.createApiKey(s, a.access, { name: 'a' });

  for (const token of [a.access, aKey.key]) {
    assertError(assert, await get(s, `/v1/jobs/${id}`, token), 404, 'NOT_FOUND');
    assertError(assert, await get(s, `/api/v1/jobs/${id}`, token), 404, 'NOT_FOUND');
    assertError(assert, await s.api('DELETE', `/v1/jobs/${id}`, { token }), 404, 'NOT_FOUND');
    assertError(assert, await s.api('POST', `/v1/jobs/${id}/retry`, { token }), 404,
      'NOT_FOUND');
  }
  // the owner sees it untouched; retrying a queued job is a state conflict, not a 404
  const mine = await get(s, `/v1/jobs/${id}`, b.access);
  assert.equal(mine.status, 200, mine.text);
  assert.equal(mine.json.status, 'queued');
  assert.equal(mine.json.cancelRequested, false, 'a\'s DELETE canceled nothing');
  assertError(assert, await s.api('POST', `/v1/jobs/${id}/retry`, { token: b.access }), 409,
    'CONFLICT');

  const aJob = (await s.api('POST', '/v1/jobs', { token: a.access, body: { type: 'noop' } }))
    .json;
  const aList = await get(s, '/v1/jobs', a.access);
  assert.equal(aList.status, 200, aList.text);
  assert.deepEqual(aList.json.data.map((j) => j.id), [aJob.id], 'a lists only a\'s job');
  const bList = await get(s, '/v1/jobs', b.access);
  assert.deepEqual(bList.json.data.map((j) => j.id), [id], 'b lists only b\'s job');
  assertError(assert, await get(s, `/v1/jobs?owner=${b.user.id}`, a.access), 403, 'FORBIDDEN');
  const own = await get(s, `/v1/jobs?owner=${a.user.id}`, a.access);
  assert.equal(own.status, 200, `?owner= self: ${own.text}`);
  assertError(assert, await get(s, '/v1/queues', a.access), 403, 'FORBIDDEN');
  assertError(assert, await get(s, '/v1/queues', aKey.key), 403, 'FORBIDDEN');
}));

// Parses the JSON printed by `conveyor users create` (the last line that is an object).
function cliJson(out) {
  const lines = out.stdout.trim().split('\n').reverse();
  for (const line of lines) {
    try {
      const v = JSON.parse(line);
      if (v && typeof v === 'object') return v;
    } catch { /* not this line */ }
  }
  throw new Error(`no JSON object in stdout: ${out.stdout}\nstderr: ${out.stderr}`);
}

test('admins: `conveyor users create --admin` and POST /v1/users {role: admin} by the ' +
  'operator; an admin sees another user\'s job and GET /v1/queues; users/{id} self, other, admin',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  // operator command, password from stdin
  const adminEmail = A.newEmail('admin');
  const adminPw = A.newPassword();
  const made = await s.cli(['users', 'create', '--email', adminEmail, '--admin',
    '--password-stdin'], { input: `${adminPw}\n` });
  assert.equal(made.code, 0, `users create: ${made.stdout}${made.stderr}`);
  const madeJson = cliJson(made);
  assert.match(madeJson.id, A.USER_ID_RE);
  assert.equal(madeJson.email, adminEmail);
  assert.equal(madeJson.role, 'admin');
  assert.ok(!('password' in madeJson), 'a password from stdin is not printed');
  assert.ok(!made.stdout.includes(adminPw) && !made.stderr.includes(adminPw));
  const admin = await A.login(s, adminEmail, adminPw);
  assert.equal(admin.user.role, 'admin');
  assert.equal(A.decodeJwt(admin.accessToken).payload.role, 'admin', 'role claim');

  // generated password, role user
  const genEmail = A.newEmail('gen');
  const gen = await s.cli(['users', 'create', '--email', genEmail, '--name', 'Gen Erated']);
  assert.equal(gen.code, 0, `users create: ${gen.stdout}${gen.stderr}`);
  const genJson = cliJson(gen);
  assert.equal(genJson.role, 'user');
  assert.equal(typeof genJson.password, 'string', 'the generated password is printed');
  const genLogin = await A.login(s, genEmail, genJson.password);
  assert.equal(genLogin.user.id, genJson.id);
  assert.equal(genLogin.user.name, 'Gen Erated');

  // existing email (another case) → exit 1, a message on stderr, nothing created
  const users = await countRows(s, 'users');
  const again = await s.cli(['users', 'create', '--email', adminEmail.toUpperCase()]);
  assert.equal(again.code, 1, `duplicate: ${again.stdout}${again.stderr}`);
  assert.ok(again.stderr.trim().length > 0, 'a message on stderr');
  assert.equal(await countRows(s, 'users'), users);

  // the operator makes an admin through the API
  const opEmail = A.newEmail('admin2');
  const opPw = A.newPassword();
  const viaApi = await s.api('POST', '/v1/users', { body: { email: opEmail, password: opPw,
    role: 'admin' } });
  assert.equal(viaApi.status, 201, viaApi.text);
  assertUser(viaApi.json, { email: opEmail, role: 'admin' });
  const admin2 = await A.login(s, opEmail, opPw);
  // ... and an admin makes one too; a user or anonymous caller naming a role → 403
  const byAdmin = await s.api('POST', '/v1/users', { token: admin2.accessToken,
    body: { email: A.newEmail('admin3'), password: A.newPassword(), role: 'admin' } });
  assert.equal(byAdmin.status, 201, byAdmin.text);
  assert.equal(byAdmin.json.role, 'admin');

  const b = await A.newUser(s);
  const before = await countRows(s, 'users');
  for (const [what, token] of [['user', b.access], ['anonymous', null]]) {
    const r = await s.api('POST', '/v1/users', { token,
      body: { email: A.newEmail(), password: A.newPassword(), role: 'admin' } });
    assert.equal(r.status, 403, `${what} giving role: ${r.text}`);
    assertError(assert, r, 403, 'FORBIDDEN');
  }
  assert.equal(await countRows(s, 'users'), before, 'no account from the refused requests');

  const bJob = (await s.api('POST', '/v1/jobs', { token: b.access, body: { type: 'noop' } }))
    .json;
  for (const [what, token] of [['cli admin', admin.accessToken], ['api admin',
    admin2.accessToken], ['operator', undefined]]) {
    const r = await get(s, `/v1/jobs/${bJob.id}`, token);
    assert.equal(r.status, 200, `${what} GET b's job: ${r.text}`);
    assert.equal(r.json.id, bJob.id);
    const l = await get(s, `/v1/jobs?owner=${b.user.id}`, token);
    assert.equal(l.status, 200, `${what} ?owner=b: ${l.text}`);
    assert.deepEqual(l.json.data.map((j) => j.id), [bJob.id], `${what} lists b's jobs`);
    assert.equal((await get(s, '/v1/queues', token)).status, 200, `${what} GET /v1/queues`);
    // an admin reaches the job: retrying a queued job is a conflict, not a 404
    assertError(assert, await s.api('POST', `/v1/jobs/${bJob.id}/retry`, { token }), 409,
      'CONFLICT');
    const u = await get(s, `/v1/users/${b.user.id}`, token);
    assert.equal(u.status, 200, `${what} GET /v1/users/{b}: ${u.text}`);
    assert.deepEqual(u.json, b.user);
  }
  // users/{id}: self ok, another user → 404 (not 403: existence is not disclosed)
  assert.equal((await get(s, `/v1/users/${b.user.id}`, b.access)).status, 200);
  assertError(assert, await get(s, `/v1/users/${madeJson.id}`, b.access), 404, 'NOT_FOUND');
  assertError(assert, await get(s, `/v1/users/${genJson.id}`, b.access), 404, 'NOT_FOUND');
  assertError(assert, await get(s, '/v1/users/usr_0000000000000000000000', b.access), 404,
    'NOT_FOUND');
  assertError(assert, await get(s, '/v1/users/usr_0000000000000000000000', admin.accessToken),
    404, 'NOT_FOUND');
}));

test('PUT /v1/users/me and /profile update the caller; role or isActive by a non-admin → ' +
  '403; password change needs currentPassword; another user → 404',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const a = await A.newUser(s, { firstName: 'Ada', lastName: 'Lovelace' });
  const b = await A.newUser(s);
  const put = (path, body, token = a.access) => s.api('PUT', path, { body, token });

  const r = await put('/v1/users/me', { firstName: 'Grace' });
  assert.equal(r.status, 200, r.text);
  assertUser(r.json, { id: a.user.id, firstName: 'Grace', lastName: 'Lovelace', role: 'user' });
  assert.ok(Date.parse(r.json.updatedAt) >= Date.parse(a.user.updatedAt), 'updatedAt');
  assert.equal(r.json.createdAt, a.user.createdAt);
  assert.equal((await me(s, a.access)).json.firstName, 'Grace', 'GET shows it');

  const p = await put('/v1/users/profile', { lastName: 'Hopper', username: 'grace',
    preferences: { theme: 'dark' } });
  assert.equal(p.status, 200, p.text);
  assert.equal(p.json.lastName, 'Hopper');
  assert.equal(p.json.username, 'grace');
  assert.deepEqual(p.json.preferences, { theme: 'dark' });
  const p2 = await put(`/v1/users/${a.user.id}`, { preferences: { lang: 'en' }, lastName: null });
  assert.equal(p2.status, 200, p2.text);
  assert.deepEqual(p2.json.preferences, { lang: 'en' }, 'preferences replaced, not merged');
  assert.equal(p2.json.lastName, null, 'null clears');
  assert.equal(p2.json.firstName, 'Grace', 'fields not given are kept');

  // role and isActive are for admins
  const snap = (await me(s, a.access)).json;
  assertError(assert, await put('/v1/users/me', { role: 'admin' }), 403, 'FORBIDDEN');
  assertError(assert, await put('/v1/users/me', { isActive: false }), 403, 'FORBIDDEN');
  assertError(assert, await put('/v1/users/me', { role: 'admin', firstName: 'X' }), 403,
    'FORBIDDEN');
  assert.deepEqual((await me(s, a.access)).json, snap, 'refused updates changed nothing');
  assert.equal(A.decodeJwt(a.access).payload.role, 'user');
  assertError(assert, await get(s, '/v1/queues', a.access), 403, 'FORBIDDEN');

  // another user's id → 404, and b is unchanged
  assertError(assert, await put(`/v1/users/${b.user.id}`, { firstName: 'Mallory' }), 404,
    'NOT_FOUND');
  assert.deepEqual((await me(s, b.access)).json, b.user);

  // password: currentPassword required and checked
  const np = A.newPassword();
  assertError(assert, await put('/v1/users/me', { password: np }), 422, 'VALIDATION_ERROR',
    'currentPassword');
  assertError(assert, await put('/v1/users/me', { password: np, currentPassword: `${np}x` }),
    422, 'VALIDATION_ERROR', 'currentPassword');
  unauthorized(await s.api('POST', '/v1/auth/login', { token: null,
    body: { email: a.email, password: np } }), 'refused change did not set the password');
  const ok = await put('/v1/users/me', { password: np, currentPassword: a.password });
  assert.equal(ok.status, 200, ok.text);
  assert.equal((await A.login(s, a.email, np)).user.id, a.user.id, 'new password works');
  unauthorized(await s.api('POST', '/v1/auth/login', { token: null,
    body: { email: a.email, password: a.password } }), 'old password');
  // an admin sets a password without currentPassword
  const np2 = A.newPassword();
  const byOp = await s.api('PUT', `/v1/users/${b.user.id}`, { body: { password: np2 } });
  assert.equal(byOp.status, 200, byOp.text);
  assert.equal((await A.login(s, b.email, np2)).user.id, b.user.id);
}));

test('DELETE /v1/users/{id} → 204: its access token, refresh token and API keys → 401 at ' +
  'once, login → 401; another user → 404; an admin deletes anyone',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const api2 = await s.startExtraApi();
  const u = await A.newUser(s);
  const key = await A.createApiKey(s, u.access, { name: 'u' });
  const v = await A.newUser(s);
  const w = await A.newUser(s);
  assert.equal((await me(api2, key.key)).status, 200, 'the key works (and is cached) first');

  assertError(assert, await s.api('DELETE', `/v1/users/${w.user.id}`, { token: v.access }),
    404, 'NOT_FOUND');
  assert.equal((await me(s, w.access)).status, 200, 'w survived v\'s DELETE');

  const del = await s.api('DELETE', `/v1/users/${u.user.id}`, { token: u.access });
  assert.equal(del.status, 204, del.text);
  for (const [what, c] of [['api', s], ['api 2', api2]]) {
    unauthorized(await me(c, u.access), `${what}: access token of the deleted user`);
    unauthorized(await me(c, key.key), `${what}: API key of the deleted user`);
  }
  unauthorized(await s.api('POST', '/v1/auth/refresh', { token: null,
    body: { refreshToken: u.refresh } }), 'refresh token of the deleted user');
  const l = await s.api('POST', '/v1/auth/login', { token: null,
    body: { email: u.email, password: u.password } });
  unauthorized(l, 'login of the deleted user');
  assert.equal(l.json.error.message, MESSAGE_BAD_LOGIN);
  assertError(assert, await get(s, `/v1/users/${u.user.id}`), 404, 'NOT_FOUND');
  assert.equal(await countRows(s, 'users', `id = '${u.user.id}'`), 0, 'the row is gone');

  // an admin (here the operator) deletes another user
  const byOp = await s.api('DELETE', `/v1/users/${w.user.id}`);
  assert.equal(byOp.status, 204, byOp.text);
  unauthorized(await me(s, w.access), 'w after the admin deleted it');
  assert.equal((await me(s, v.access)).status, 200, 'v is unaffected');
}));

test('a key revocation PostgreSQL refuses changes nothing: an error, and the key still works; then it is revoked',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const api2 = await s.startExtraApi();
  const u = await A.newUser(s);
  const k = await A.createApiKey(s, u.access, { name: 'k' });
  for (const c of [s, api2]) assert.equal((await me(c, k.key)).status, 200, 'the key works (and is cached)');
  const table = usersTable(s, 'api_keys');
  await s.psql(`ALTER TABLE ${table} ADD CONSTRAINT no_revoke CHECK (revoked_at IS NULL) NOT VALID`);
  const del = await s.api('DELETE', `/v1/auth/api-keys/${k.id}`, { token: u.access });
  assert.ok(del.status >= 400 && del.json && del.json.error, `refused: ${del.status} ${del.text}`);
  for (const c of [s, api2]) assert.equal((await me(c, k.key)).status, 200, 'still works');
  await s.psql(`ALTER TABLE ${table} DROP CONSTRAINT no_revoke`);
  assert.equal((await s.api('DELETE', `/v1/auth/api-keys/${k.id}`, { token: u.access })).status, 204);
  for (const c of [s, api2]) unauthorized(await me(c, k.key), 'the revoked key');
}));

test('a user holds at most 100 live API keys: the 101st → 409 and nothing is created; a revoked one frees a place',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const u = await A.newUser(s);
  const keys = [];
  for (let i = 0; i < 100; i++) keys.push(await A.createApiKey(s, u.access, { name: `k${i}` }));
  const over = await s.api('POST', '/v1/auth/api-keys', { token: u.access, body: { name: 'one more' } });
  assertError(assert, over, 409, 'CONFLICT');
  assert.equal(over.json.error.details.limit, 100);
  assert.equal(await countRows(s, 'api_keys', `user_id = '${u.user.id}'`), 100, 'no 101st row');
  assert.equal((await s.api('DELETE', `/v1/auth/api-keys/${keys[0].id}`, { token: u.access })).status, 204);
  const again = await s.api('POST', '/v1/auth/api-keys', { token: u.access, body: { name: 'again' } });
  assert.equal(again.status, 201, again.text);
  // another user is not affected by u's keys
  const v = await A.newUser(s);
  assert.equal((await s.api('POST', '/v1/auth/api-keys', { token: v.access, body: {} })).status, 201);
}));

test('an admin\'s role change or isActive=false revokes the user\'s sessions (tokens → 401); ' +
  'the new role holds for new tokens and API keys',
{ timeout: 60000 }, () => withStack(OPTS, async (s) => {
  const api2 = await s.startExtraApi();
  const adminEmail = A.newEmail('admin');
  const adminPw = A.newPassword();
  assert.equal((await s.api('POST', '/v1/users', { body: { email: adminEmail,
    password: adminPw, role: 'admin' } })).status, 201);
  const admin = await A.login(s, adminEmail, adminPw);
  const b = await A.newUser(s);
  const bKey = await A.createApiKey(s, b.access, { name: 'b' });
  assertError(assert, await get(api2, '/v1/queues', bKey.key), 403, 'FORBIDDEN');

  const up = await s.api('PUT', `/v1/users/${b.user.id}`, { token: admin.accessToken,
    body: { role: 'admin' } });
  assert.equal(up.status, 200, up.text);
  assert.equal(up.json.role, 'admin');
  for (const c of [s, api2]) unauthorized(await me(c, b.access), 'b\'s token after promotion');
  unauthorized(await s.api('POST', '/v1/auth/refresh', { token: null,
    body: { refreshToken: b.refresh } }), 'b\'s refresh token after promotion');
  const b2 = await A.login(s, b.email, b.password);
  assert.equal(A.decodeJwt(b2.accessToken).payload.role, 'admin', 'new token: role admin');
  assert.equal((await get(api2, '/v1/queues', b2.accessToken)).status, 200);
  // the key is b's, not a session: it stays and now carries the new role
  const viaKey = await get(api2, '/v1/queues', bKey.key);
  assert.equal(viaKey.status, 200, `b's key after promotion: ${viaKey.text}`);

  // demotion and deactivation
  const c = await A.newUser(s);
  const cKey = await A.createApiKey(s, c.access, {});
  assert.equal((await me(api2, cKey.key)).status, 200, 'c\'s key works (and is cached) first');
  const off = await s.api('PUT', `/v1/users/${c.user.id}`, { token: admin.accessToken,
    body: { isActive: false } });
  assert.equal(off.status, 200, off.text);
  assert.equal(off.json.isActive, false);
  for (const cl of [s, api2]) {
    unauthorized(await me(cl, c.access), 'c\'s token after isActive=false');
    unauthorized(await me(cl, cKey.key), 'c\'s key after isActive=false');
  }
  unauthorized(await s.api('POST', '/v1/auth/login', { token: null,
    body: { email: c.email, password: c.password } }), 'an inactive user signs in');

  const down = await s.api('PUT', `/v1/users/${b.user.id}`, { token: admin.accessToken,
    body: { role: 'user' } });
  assert.equal(down.status, 200, down.text);
  unauthorized(await me(s, b2.accessToken), 'b\'s admin token after demotion');
  // a request that read b's key from PostgreSQL before the demotion's commit, caching
  // it afterwards (a load only writes where nothing is cached): it must not win
  const sha = crypto.createHash('sha256').update(bKey.key).digest('hex');
  const akeyPut = fs.readFileSync(path.join(__dirname, '..', '..', 'api', 'lua', 'akey_put.lua'), 'utf8');
  assert.equal(await s.redis('EVAL', akeyPut, '1', s.key('akey', sha), bKey.id, b.user.id, 'admin',
    '0', '600000', '0'), '0', 'the key is cached with its new role: a stale load is refused');
  assertError(assert, await get(api2, '/v1/queues', bKey.key), 403, 'FORBIDDEN');
  assertError(assert, await get(s, '/v1/queues', bKey.key), 403, 'FORBIDDEN');
  assert.equal((await me(s, admin.accessToken)).status, 200, 'the admin is unaffected');
}));
