'use strict';
// Bad account requests: each gets its exact 4xx and error envelope, and creates, changes
// or revokes nothing (users, sessions, refresh tokens and API keys in PostgreSQL are the
// same before and after each; the caller's tokens still work at the end).
const test = require('node:test');
const assert = require('node:assert/strict');
const { withStack, assertError } = require('./lib/stack');
const A = require('./lib/accounts');

const PW = 'a-fine-password-1';
const reg = (extra) => ({ email: 'new-user@example.com', password: PW, ...extra });
const json = (o) => JSON.stringify(o);

// {name, method?, path?, body?, headers?, token?, status, code, field?, alt?}
// path defaults to /v1/auth/register; token: 'USER' → the signed-in user's access token,
// another string → that bearer token, absent → none. In paths, headers and bodies,
// EXISTING_PW, EXISTING, ACCESS, REFRESH and ME_ID stand for the signed-in user's password,
// email, access token, refresh token and id. alt lists other [status, code] answers the
// contract leaves open (well-formed JSON that is not an object: "malformed" (400) or
// "invalid" (422) are both fair).
const CASES = [
  // ---- register: body and media type
  { name: 'register: malformed JSON', body: '{"email": "a@b.c",', status: 400,
    code: 'INVALID_REQUEST' },
  { name: 'register: empty body', body: '', status: 400, code: 'INVALID_REQUEST',
    alt: [[422, 'VALIDATION_ERROR']] },
  { name: 'register: JSON array body', body: json([reg()]), status: 422,
    code: 'VALIDATION_ERROR', alt: [[400, 'INVALID_REQUEST']] },
  { name: 'register: JSON string body', body: '"a@b.c"', status: 422, code: 'VALIDATION_ERROR',
    alt: [[400, 'INVALID_REQUEST']] },
  { name: 'register: invalid UTF-8', status: 400, code: 'INVALID_REQUEST',
    body: Buffer.concat([Buffer.from('{"email":"a@b.c","password":"'),
      Buffer.from([0xc3, 0x28]), Buffer.from('xxxxxxxx"}')]) },
  { name: 'register: Content-Type text/plain', body: json(reg()),
    headers: { 'Content-Type': 'text/plain' }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'register: form-encoded', body: `email=a%40b.c&password=${PW}`,
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE' },
  // (a body with no Content-Type at all is read as JSON, as on every endpoint: only a
  // declared non-JSON type is refused)
  { name: 'register: body over 1 MiB', status: 413, code: 'PAYLOAD_TOO_LARGE',
    body: json(reg({ firstName: 'x'.repeat(1024 * 1024 + 10) })) },
  // ---- register: email
  { name: 'register: email missing', body: { password: PW }, status: 422,
    code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'register: email a number', body: reg({ email: 42 }), status: 422,
    code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'register: email null', body: reg({ email: null }), status: 422,
    code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'register: email without @', body: reg({ email: 'new-user.example.com' }),
    status: 422, code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'register: email with two @', body: reg({ email: 'a@b@example.com' }), status: 422,
    code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'register: email with nothing before @', body: reg({ email: '@example.com' }),
    status: 422, code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'register: email with nothing after @', body: reg({ email: 'new-user@' }),
    status: 422, code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'register: email with a space inside', body: reg({ email: 'new user@example.com' }),
    status: 422, code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'register: email of 255 characters', status: 422, code: 'VALIDATION_ERROR',
    field: 'email', body: reg({ email: `${'a'.repeat(243)}@example.com` }) },
  // ---- register: password
  { name: 'register: password missing', body: { email: 'new-user@example.com' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'password' },
  { name: 'register: password of 7 characters', body: reg({ password: 'abcdefg' }),
    status: 422, code: 'VALIDATION_ERROR', field: 'password' },
  { name: 'register: password a number', body: reg({ password: 1234567890 }), status: 422,
    code: 'VALIDATION_ERROR', field: 'password' },
  { name: 'register: password an array', body: reg({ password: [PW] }), status: 422,
    code: 'VALIDATION_ERROR', field: 'password' },
  { name: 'register: password of 1025 characters', body: reg({ password: 'p'.repeat(1025) }),
    status: 422, code: 'VALIDATION_ERROR', field: 'password' },
  // ---- register: other fields
  { name: 'register: unknown field', body: reg({ isAdmin: true }), status: 422,
    code: 'VALIDATION_ERROR', field: 'isAdmin' },
  { name: 'register: role (not a register field)', body: reg({ role: 'admin' }), status: 422,
    code: 'VALIDATION_ERROR', field: 'role', alt: [[403, 'FORBIDDEN']] },
  { name: 'register: firstName of 101 characters', body: reg({ firstName: 'f'.repeat(101) }),
    status: 422, code: 'VALIDATION_ERROR', field: 'firstName' },
  { name: 'register: lastName a number', body: reg({ lastName: 7 }), status: 422,
    code: 'VALIDATION_ERROR', field: 'lastName' },
  { name: 'register: name an object', body: reg({ name: { first: 'a' } }), status: 422,
    code: 'VALIDATION_ERROR', field: 'name' },
  { name: 'register: username with a space', body: reg({ username: 'new user' }), status: 422,
    code: 'VALIDATION_ERROR', field: 'username' },
  { name: 'register: username of 65 characters', body: reg({ username: 'u'.repeat(65) }),
    status: 422, code: 'VALIDATION_ERROR', field: 'username' },
  { name: 'register: username empty', body: reg({ username: '' }), status: 422,
    code: 'VALIDATION_ERROR', field: 'username' },
  { name: 'POST /v1/users: password too short', path: '/v1/users',
    body: reg({ password: 'short' }), status: 422, code: 'VALIDATION_ERROR', field: 'password' },
  { name: 'POST /v1/users: with a bad bearer token (not anonymous)', path: '/v1/users',
    body: reg(), token: 'not-a-token', status: 401, code: 'UNAUTHORIZED' },
  // ---- login
  { name: 'login: malformed JSON', path: '/v1/auth/login', body: '{"email":', status: 400,
    code: 'INVALID_REQUEST' },
  { name: 'login: password missing', path: '/v1/auth/login', body: { email: 'EXISTING' },
    status: 422, code: 'VALIDATION_ERROR', field: 'password' },
  { name: 'login: email missing', path: '/v1/auth/login', body: { password: PW }, status: 422,
    code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'login: password a number', path: '/v1/auth/login',
    body: { email: 'EXISTING', password: 12345678 }, status: 422, code: 'VALIDATION_ERROR',
    field: 'password' },
  { name: 'login: email an array', path: '/v1/auth/login',
    body: { email: ['EXISTING'], password: PW }, status: 422, code: 'VALIDATION_ERROR',
    field: 'email' },
  { name: 'login: Content-Type text/plain', path: '/v1/auth/login',
    body: json({ email: 'EXISTING', password: PW }), headers: { 'Content-Type': 'text/plain' },
    status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  // ---- refresh
  { name: 'refresh: refreshToken missing', path: '/v1/auth/refresh', body: {}, status: 422,
    code: 'VALIDATION_ERROR', field: 'refreshToken' },
  { name: 'refresh: refreshToken a number', path: '/v1/auth/refresh',
    body: { refreshToken: 5 }, status: 422, code: 'VALIDATION_ERROR', field: 'refreshToken' },
  { name: 'refresh: refreshToken garbage', path: '/v1/auth/refresh',
    body: { refreshToken: 'garbage' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'refresh: refreshToken rt_ + unknown', path: '/v1/auth/refresh',
    body: { refreshToken: `rt_${'A'.repeat(43)}` }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'refresh: an access token as refreshToken', path: '/v1/auth/refresh',
    body: { refreshToken: 'ACCESS' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'refresh: malformed JSON', path: '/v1/auth/refresh', body: '{"refreshToken":',
    status: 400, code: 'INVALID_REQUEST' },
  // ---- API keys (signed in)
  { name: 'api-key: name of 4096 characters', path: '/v1/auth/api-keys', token: 'USER',
    body: { name: 'n'.repeat(4096) }, status: 422, code: 'VALIDATION_ERROR', field: 'name' },
  { name: 'api-key: name a number', path: '/v1/auth/api-keys', token: 'USER',
    body: { name: 5 }, status: 422, code: 'VALIDATION_ERROR', field: 'name' },
  { name: 'api-key: expiresAt not a date', path: '/v1/auth/api-keys', token: 'USER',
    body: { expiresAt: 'next week' }, status: 422, code: 'VALIDATION_ERROR',
    field: 'expiresAt' },
  { name: 'api-key: expiresAt impossible date', path: '/v1/auth/api-keys', token: 'USER',
    body: { expiresAt: '2031-02-30T25:61:00Z' }, status: 422, code: 'VALIDATION_ERROR',
    field: 'expiresAt' },
  { name: 'api-key: expiresAt a number', path: '/v1/auth/api-keys', token: 'USER',
    body: { expiresAt: 1893456000 }, status: 422, code: 'VALIDATION_ERROR',
    field: 'expiresAt' },
  { name: 'api-key: expiresAt in the past', path: '/v1/auth/api-keys', token: 'USER',
    body: { expiresAt: '2001-01-01T00:00:00.000Z' }, status: 422, code: 'VALIDATION_ERROR',
    field: 'expiresAt' },
  { name: 'api-key: Content-Type text/plain', path: '/v1/auth/api-keys', token: 'USER',
    body: json({ name: 'x' }), headers: { 'Content-Type': 'text/plain' }, status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'api-key: no credential', path: '/v1/auth/api-keys', body: { name: 'x' },
    status: 401, code: 'UNAUTHORIZED' },
  { name: 'api-key: DELETE an unknown id', method: 'DELETE',
    path: '/v1/auth/api-keys/key_0000000000000000000000', token: 'USER', status: 404,
    code: 'NOT_FOUND' },
  // ---- credentials of the wrong shape
  { name: 'Bearer with an empty token', method: 'GET', path: '/v1/users/me',
    headers: { Authorization: 'Bearer ' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'Bearer without a token', method: 'GET', path: '/v1/users/me',
    headers: { Authorization: 'Bearer' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'Basic auth scheme', method: 'GET', path: '/v1/users/me',
    headers: { Authorization: 'Basic bmV3LXVzZXJAZXhhbXBsZS5jb206cGFzc3dvcmQ=' }, status: 401,
    code: 'UNAUTHORIZED' },
  { name: 'Basic auth on api-key creation', path: '/v1/auth/api-keys', body: { name: 'x' },
    headers: { Authorization: 'Basic bmV3LXVzZXJAZXhhbXBsZS5jb206cGFzc3dvcmQ=' }, status: 401,
    code: 'UNAUTHORIZED' },
  { name: 'Token scheme with a real access token', method: 'GET', path: '/v1/users/me',
    headers: { Authorization: 'Token ACCESS' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'Bearer a.b.c', method: 'GET', path: '/v1/users/me',
    headers: { Authorization: 'Bearer a.b.c' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'Bearer with a refresh token', method: 'GET', path: '/v1/users/me',
    headers: { Authorization: 'Bearer REFRESH' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'Bearer with an unknown API key', method: 'GET', path: '/v1/users/me',
    headers: { Authorization: `Bearer ak_live_${'0'.repeat(40)}` }, status: 401,
    code: 'UNAUTHORIZED' },
  { name: '?token= empty', method: 'GET', path: '/v1/users/me?token=', status: 401,
    code: 'UNAUTHORIZED' },
  { name: '?api_key= garbage', method: 'GET', path: '/v1/users/me?api_key=garbage',
    status: 401, code: 'UNAUTHORIZED' },
  { name: 'logout with a bad token', path: '/v1/auth/logout',
    headers: { Authorization: 'Bearer a.b.c' }, status: 401, code: 'UNAUTHORIZED' },
  // ---- PUT /v1/users/me (signed in)
  { name: 'PUT me: empty object', method: 'PUT', path: '/v1/users/me', token: 'USER', body: {},
    status: 422, code: 'VALIDATION_ERROR' },
  { name: 'PUT me: bad email', method: 'PUT', path: '/v1/users/me', token: 'USER',
    body: { email: 'not-an-address' }, status: 422, code: 'VALIDATION_ERROR', field: 'email' },
  { name: 'PUT me: preferences a string', method: 'PUT', path: '/v1/users/me', token: 'USER',
    body: { preferences: 'dark' }, status: 422, code: 'VALIDATION_ERROR',
    field: 'preferences' },
  { name: 'PUT me: firstName a number', method: 'PUT', path: '/v1/users/me', token: 'USER',
    body: { firstName: 5 }, status: 422, code: 'VALIDATION_ERROR', field: 'firstName' },
  { name: 'PUT me: password without currentPassword', method: 'PUT', path: '/v1/users/me',
    token: 'USER', body: { password: 'another-password-2' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'currentPassword' },
  { name: 'PUT me: password too short', method: 'PUT', path: '/v1/users/me', token: 'USER',
    body: { password: 'short', currentPassword: 'EXISTING_PW' }, status: 422,
    code: 'VALIDATION_ERROR', field: 'password' },
  { name: 'PUT me: unknown field', method: 'PUT', path: '/v1/users/me', token: 'USER',
    body: { shoeSize: 44 }, status: 422, code: 'VALIDATION_ERROR', field: 'shoeSize' },
  { name: 'PUT me: role by a user', method: 'PUT', path: '/v1/users/me', token: 'USER',
    body: { role: 'admin' }, status: 403, code: 'FORBIDDEN' },
  { name: 'PUT me: Content-Type text/plain', method: 'PUT', path: '/v1/users/me',
    token: 'USER', body: json({ firstName: 'x' }), headers: { 'Content-Type': 'text/plain' },
    status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' },
  { name: 'PUT me: malformed JSON', method: 'PUT', path: '/v1/users/me', token: 'USER',
    body: '{"firstName":', status: 400, code: 'INVALID_REQUEST' },
  { name: 'PUT me: body over 1 MiB', method: 'PUT', path: '/v1/users/me', token: 'USER',
    body: json({ firstName: 'x'.repeat(1024 * 1024 + 10) }), status: 413,
    code: 'PAYLOAD_TOO_LARGE' },
  // ---- users/{id}
  { name: 'DELETE /v1/users/{unknown}', method: 'DELETE',
    path: '/v1/users/usr_0000000000000000000000', token: 'USER', status: 404,
    code: 'NOT_FOUND' },
  { name: 'DELETE /v1/users/{id} without credential', method: 'DELETE', path: '/v1/users/ME_ID',
    status: 401, code: 'UNAUTHORIZED' },
];

// Everything a bad request could have created, changed or revoked, from PostgreSQL.
async function snapshot(s) {
  const t = (name) => `"${s.schema}".${name}`;
  return s.psql(`SELECT json_build_object(
    'users', (SELECT json_agg(u ORDER BY u.id) FROM ${t('users')} u),
    'sessions', (SELECT json_agg(x ORDER BY x.id) FROM ${t('sessions')} x),
    'refresh', (SELECT count(*) FROM ${t('refresh_tokens')}),
    'apiKeys', (SELECT json_agg(k ORDER BY k.id) FROM ${t('api_keys')} k))`);
}

test(`${CASES.length} malformed account requests: exact status, code and envelope; nothing ` +
  'created, changed or revoked',
{ timeout: 120000 }, (t) => withStack({ workers: 0, schedulers: 0, env: A.ACCOUNTS_ENV },
  async (s) => {
    assert.ok(CASES.length >= 15);
    const u = await A.newUser(s, { firstName: 'Ada' });
    const fill = (v) => (typeof v === 'string'
      ? v.replace('EXISTING_PW', u.password).replace('EXISTING', u.email)
        .replace('ACCESS', u.access).replace('REFRESH', u.refresh).replace('ME_ID', u.user.id)
      : v);
    const before = await snapshot(s);
    assert.ok(before.includes(u.user.id), `snapshot sees the user: ${before.slice(0, 200)}`);
    // each case is compared with the state just before it: one that wrongly creates
    // something fails alone, not every case after it
    for (const c of CASES) {
      await t.test(c.name, async () => {
        const was = await snapshot(s);
        let body = c.body;
        if (typeof body === 'string' && body.length < 4096) body = fill(body);
        else if (body && typeof body === 'object' && !Buffer.isBuffer(body)) {
          body = JSON.parse(fill(JSON.stringify(body)));
        }
        const headers = Object.fromEntries(Object.entries(c.headers || {})
          .map(([k, v]) => [k, fill(v)]));
        const r = await s.api(c.method || 'POST', fill(c.path || '/v1/auth/register'),
          { body, headers, token: c.token === 'USER' ? u.access : (c.token ?? null) });
        const [status, code] = (c.alt || []).find(([st]) => st === r.status) ||
          [c.status, c.code];
        assertError(assert, r, status, code, c.field);
        assert.equal(await snapshot(s), was, 'nothing created, changed or revoked');
      });
    }
    // the api survived all of it, and the user's session and password are intact
    assert.equal((await s.api('GET', '/healthz', { token: null })).status, 200);
    const meR = await s.api('GET', '/v1/users/me', { token: u.access });
    assert.equal(meR.status, 200, `access token still valid: ${meR.text}`);
    assert.deepEqual(meR.json, u.user);
    const ref = await s.api('POST', '/v1/auth/refresh', { token: null,
      body: { refreshToken: u.refresh } });
    assert.equal(ref.status, 200, `refresh token still valid: ${ref.text}`);
    assert.equal((await A.login(s, u.email, u.password)).user.id, u.user.id);
  }));
