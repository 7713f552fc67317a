'use strict';
// tests/integration/lib/accounts.js — user accounts for the integration tests: sign-up,
// sign-in, hand-made JWTs, and the environment of stacks whose tests register many users.
//
// Every test registers and signs in from 127.0.0.1: ACCOUNTS_ENV lifts the per-IP and
// per-user limits out of the way (ratelimit.test.js sets its own) and makes argon2id cheap
// (the hash parameters are not what these tests are about).

const crypto = require('node:crypto');

const ACCOUNTS_ENV = {
  CONVEYOR_RATE_LIMIT_AUTH: '1000',
  CONVEYOR_RATE_LIMIT_IP: '100000',
  CONVEYOR_RATE_LIMIT_USER: '100000',
  CONVEYOR_RATE_LIMIT_API_KEY: '100000',
  CONVEYOR_ARGON2_MEMORY_KIB: '1024',
  CONVEYOR_ARGON2_ITERATIONS: '1',
};

const USER_ID_RE = /^usr_[0-9A-Za-z]{22}$/;
const KEY_ID_RE = /^key_[0-9A-Za-z]{22}$/;
const API_KEY_RE = /^ak_live_[0-9A-Za-z]{40}$/;
// the contract's timestamps: RFC 3339 UTC with milliseconds
const TIME_MS_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

function rand(n = 10) {
  return crypto.randomBytes(n).toString('hex').slice(0, n);
}

// A fresh address (unique per call) and a password of 20 characters.
function newEmail(tag = 'u') {
  return `${tag}-${rand(12)}@example.com`;
}

function newPassword() {
  return `pw-${rand(17)}`;
}

// POST /v1/auth/register (no credential) expecting 201; returns the user JSON. fields:
// {email, password, firstName, ...}; email and password are made up when absent.
// opts.api: the client (stack or stack.startExtraApi()'s object) to send it through.
async function registerUser(stack, fields = {}, { api = stack } = {}) {
  const body = { email: newEmail(), password: newPassword(), ...fields };
  const r = await api.api('POST', '/v1/auth/register', { body, token: null });
  if (r.status !== 201) {
    throw new Error(`register ${JSON.stringify(body)} → ${r.status} ${r.text}`);
  }
  return r.json;
}

// POST /v1/auth/login expecting 200; returns its JSON {accessToken, refreshToken, user...}.
async function login(stack, email, password, { api = stack } = {}) {
  const r = await api.api('POST', '/v1/auth/login', { body: { email, password }, token: null });
  if (r.status !== 200) throw new Error(`login ${email} → ${r.status} ${r.text}`);
  return r.json;
}

// Registers and signs in a new user; returns {email, password, user, access, refresh,
// login} (login: the whole sign-in answer).
async function newUser(stack, fields = {}) {
  const email = fields.email || newEmail();
  const password = fields.password || newPassword();
  const user = await registerUser(stack, { ...fields, email, password });
  const l = await login(stack, email, password);
  return { email, password, user, access: l.accessToken, refresh: l.refreshToken, login: l };
}

// POST /v1/auth/api-keys with a user's access token expecting 201; returns the key JSON
// (with `key`).
async function createApiKey(stack, access, body = {}) {
  const r = await stack.api('POST', '/v1/auth/api-keys', { body, token: access });
  if (r.status !== 201) throw new Error(`create api key → ${r.status} ${r.text}`);
  return r.json;
}

// ---------------------------------------------------------------- JWT by hand

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const b64json = (obj) => b64url(JSON.stringify(obj));

// {header, payload, signature} of a compact JWS (throws if it is not three parts of JSON).
function decodeJwt(token) {
  const parts = token.split('.');
  if (parts.length !== 3) throw new Error(`not a JWT: ${token}`);
  return {
    header: JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')),
    signature: parts[2],
  };
}

// header.payload.signature with an HMAC (alg 'HS256' → sha256, 'HS512' → sha512) keyed
// by secret over the two encoded parts; header defaults to {alg: 'HS256', typ: 'JWT'}.
function signJwt(payload, secret, header = { alg: 'HS256', typ: 'JWT' }) {
  const digest = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[header.alg] || 'sha256';
  const input = `${b64json(header)}.${b64json(payload)}`;
  const sig = crypto.createHmac(digest, secret).update(input).digest('base64url');
  return `${input}.${sig}`;
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

module.exports = {
  ACCOUNTS_ENV,
  USER_ID_RE,
  KEY_ID_RE,
  API_KEY_RE,
  TIME_MS_RE,
  newEmail,
  newPassword,
  registerUser,
  login,
  newUser,
  createApiKey,
  b64json,
  decodeJwt,
  signJwt,
  nowSeconds,
};
