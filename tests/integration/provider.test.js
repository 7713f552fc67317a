'use strict';
// The OpenAI-compatible test provider (tests/provider/, bin/conveyor-test-provider): request
// checks and OpenAI's error shape, the deterministic reply with honest usage, --api-key,
// per-request markers, /_control knobs, /_stats and /_reset, /v1/models, keep-alive and
// pipelining, size limits, malformed HTTP, the connection limit, and SIGTERM. Every test
// starts its own provider (CONVEYOR_TEST_PROVIDER picks the binary, e.g. the -san build),
// ends it with SIGTERM, and requires exit 0 with nothing on stderr: ASan, UBSan and
// LeakSanitizer report there.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');

const BIN = process.env.CONVEYOR_TEST_PROVIDER ||
  path.resolve(__dirname, '../../bin/conveyor-test-provider');
const T = { timeout: 60000 };

// Providers still running if the test process stops early.
const live = new Set();
process.on('exit', () => { for (const p of live) p.kill('SIGKILL'); });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolves with p, or rejects with message after ms.
function within(p, ms, message) {
  let timer;
  return Promise.race([p, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  })]).finally(() => clearTimeout(timer));
}

// Spawns the provider on a free port; resolves once it prints its listening line.
async function startProvider(args = []) {
  const proc = spawn(BIN, ['--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
    live.delete(proc);
    resolve({ code, signal });
  }));
  try {
    const port = await within(new Promise((resolve, reject) => {
      let out = '';
      proc.on('error', reject);
      proc.stdout.on('data', (d) => {
        out += d;
        const m = /^listening on 127\.0\.0\.1:(\d+)\n/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      exited.then(({ code, signal }) =>
        reject(new Error(`provider exited (${code ?? signal}) before listening: ${err}`)));
    }), 10000, 'the provider did not print its listening line within 10 s');
    return { proc, port, exited, stderr: () => err };
  } catch (e) {
    proc.kill('SIGKILL');
    throw e;
  }
}

// Sends sig and waits for the exit: resolves with {code, signal}.
function stopProvider(p, sig = 'SIGTERM') {
  p.proc.kill(sig);
  return within(p.exited, 10000, `the provider did not exit on ${sig} within 10 s`);
}

// Runs body(p) against a fresh provider, then requires a clean SIGTERM exit.
async function withProvider(args, body) {
  const p = await startProvider(args);
  try {
    await body(p);
    const r = await stopProvider(p);
    assert.deepEqual(r, { code: 0, signal: null }, `exit after SIGTERM; stderr: ${p.stderr()}`);
    assert.equal(p.stderr(), '', 'nothing on stderr (sanitizers print there)');
  } finally {
    if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
  }
}

// One HTTP request; resolves with {status, headers, text, json, reused, localPort}.
function request(port, { method = 'GET', path: urlPath = '/', body, headers = {}, agent = false,
  timeoutMs = 15000, signal } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined
      : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const req = http.request({
      host: '127.0.0.1', port, method, path: urlPath, agent, signal,
      headers: { ...(data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {}),
        ...headers },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json;
        try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json,
          reused: req.reusedSocket, localPort: res.socket && res.socket.localPort });
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

const user = (content) => ({ role: 'user', content });
const chatBody = (content, extra = {}) => ({ model: 'gpt-test', messages: [user(content)], ...extra });
const chat = (port, body, opts = {}) =>
  request(port, { method: 'POST', path: '/v1/chat/completions', body, ...opts });
const say = (port, content, opts) => chat(port, chatBody(content), opts);
const control = (port, settings) => request(port, { method: 'POST', path: '/_control', body: settings });
const stats = async (port) => {
  const r = await request(port, { path: '/_stats' });
  assert.equal(r.status, 200);
  return r.json;
};

// Polls /_stats until ok(stats) holds (at most ms).
async function statsUntil(port, ok, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const s = await stats(port);
    if (ok(s)) return s;
    if (Date.now() > end) assert.fail(`stats never matched: ${JSON.stringify({ ...s, arrivals: s.arrivals.length })}`);
    await sleep(20);
  }
}

// What the provider's token count is: runs of non-whitespace (ASCII whitespace).
const words = (t) => t.split(/[ \t\n\r\f\v]+/).filter(Boolean).length;

// The documented answer to a chat request.
function expected(req) {
  const text = (c) => (typeof c === 'string' ? c : c.map((p) => p.text).join('\n'));
  const prompt = req.messages.reduce((n, m) => n + words(text(m.content)) + 3, 0);
  const last = [...req.messages].reverse().find((m) => m.role === 'user');
  const content = `Echo: ${last ? text(last.content) : ''}`;
  return { content, usage: { prompt_tokens: prompt, completion_tokens: words(content),
    total_tokens: prompt + words(content) } };
}

// An OpenAI error body: exactly {error: {message, type, param, code}}.
function assertOpenAiError(r, status, { type = 'invalid_request_error', param = null, code = null } = {}) {
  assert.equal(r.status, status, r.text);
  assert.match(r.headers['content-type'], /^application\/json/);
  assert.deepEqual(Object.keys(r.json), ['error'], r.text);
  assert.deepEqual(Object.keys(r.json.error).sort(), ['code', 'message', 'param', 'type'], r.text);
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok(r.json.error.message.length > 0);
  assert.equal(r.json.error.type, type, r.text);
  assert.equal(r.json.error.param, param, r.text);
  assert.equal(r.json.error.code, code, r.text);
}

// Writes bytes on a new connection and resolves with everything read once the server
// ends the connection (a reset rejects: closing must be graceful).
// end: half-close our side after writing.
function raw(port, bytes, { timeoutMs = 10000, onData, end = false } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`the server did not end the connection within ${timeoutMs} ms; read: ` +
        Buffer.concat(chunks).toString('latin1').slice(0, 300)));
    }, timeoutMs);
    s.on('connect', () => {
      if (bytes) s.write(bytes);
      if (end) s.end();
    });
    s.on('data', (c) => { chunks.push(c); if (onData) onData(s, Buffer.concat(chunks).toString('latin1')); });
    s.on('end', () => {
      clearTimeout(timer);
      s.end();
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    s.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

// The status codes of the responses in a raw byte stream, in order.
const statuses = (text) => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

// A request that is aborted by the client after ms; resolves once it has failed.
async function abortedAfter(port, content, ms = 300) {
  const t0 = Date.now();
  await assert.rejects(say(port, content, { signal: AbortSignal.timeout(ms) }));
  return Date.now() - t0;
}

// ---- start-up, models ---------------------------------------------------------------

test('prints "listening on 127.0.0.1:PORT" for --port 0; GET /v1/models is an OpenAI list', T,
  () => withProvider([], async ({ port }) => {
    assert.ok(port > 0);
    const r = await request(port, { path: '/v1/models' });
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^application\/json/);
    assert.equal(r.json.object, 'list');
    assert.equal(r.json.data.length, 1);
    assert.equal(r.json.data[0].id, 'test-echo');
    assert.equal(r.json.data[0].object, 'model');
  }));

test('bad command lines exit 2 with the usage; a port in use exits 1', T, async () => {
  const run = (args) => new Promise((resolve, reject) => {
    const p = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`${args} did not exit`)); }, 10000);
    p.on('exit', (code) => { clearTimeout(timer); resolve({ code, err }); });
  });
  for (const args of [[], ['--port'], ['--port', 'x'], ['--port', '70000'],
    ['--port', '0', '--error-rate', '2'], ['--port', '0', '--error-status', '200'],
    ['--port', '0', '--latency-ms', '-1'], ['--port', '0', '--bogus', '1'], ['--port', '0', '--host', 'nohost']]) {
    const r = await run(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, /^usage: conveyor-test-provider --port N/, args.join(' '));
  }
  await withProvider([], async ({ port }) => {
    const r = await run(['--port', String(port)]);
    assert.equal(r.code, 1);
    assert.match(r.err, /cannot listen on 127\.0\.0\.1:\d+/);
  });
});

// ---- request checks -----------------------------------------------------------------

test('invalid chat requests: 400 in OpenAI\'s error shape naming the field', T,
  () => withProvider([], async ({ port }) => {
    const m = (extra) => ({ model: 'gpt-test', messages: [user('hi')], ...extra });
    const cases = [
      ['malformed JSON', '{"model": "x",', null],
      ['empty body', '', null],
      ['a JSON array', [m()], null],
      ['a JSON string', '"hello"', null],
      ['model missing', { messages: [user('hi')] }, 'model'],
      ['model empty', m({ model: '' }), 'model'],
      ['model a number', m({ model: 4 }), 'model'],
      ['messages missing', { model: 'gpt-test' }, 'messages'],
      ['messages empty', m({ messages: [] }), 'messages'],
      ['messages an object', m({ messages: user('hi') }), 'messages'],
      ['a message that is a string', m({ messages: ['hi'] }), 'messages[0]'],
      ['unknown role', m({ messages: [user('a'), { role: 'robot', content: 'b' }] }), 'messages[1].role'],
      ['role missing', m({ messages: [{ content: 'b' }] }), 'messages[0].role'],
      ['role a number', m({ messages: [{ role: 1, content: 'b' }] }), 'messages[0].role'],
      ['content missing', m({ messages: [{ role: 'user' }] }), 'messages[0].content'],
      ['content a number', m({ messages: [{ role: 'user', content: 5 }] }), 'messages[0].content'],
      ['content null', m({ messages: [{ role: 'system', content: null }, user('x')] }), 'messages[0].content'],
      ['content part not text', m({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }),
        'messages[0].content'],
      ['stream true', m({ stream: true }), 'stream'],
      ['max_tokens 0', m({ max_tokens: 0 }), 'max_tokens'],
      ['max_tokens negative', m({ max_tokens: -3 }), 'max_tokens'],
      ['max_tokens a string', m({ max_tokens: '5' }), 'max_tokens'],
      ['max_tokens 2.5', m({ max_tokens: 2.5 }), 'max_tokens'],
    ];
    for (const [name, body, param] of cases) {
      const r = await chat(port, body); // strings are sent as they are
      try {
        assertOpenAiError(r, 400, { param });
      } catch (e) {
        e.message = `${name}: ${e.message}`;
        throw e;
      }
    }
    const s = await stats(port);
    assert.equal(s.requests, cases.length);
    assert.deepEqual(s.byStatus, { 400: cases.length });
    assert.equal(s.inFlight, 0);
    // stream: false and null are fine
    assert.equal((await chat(port, m({ stream: false }))).status, 200);
    assert.equal((await chat(port, m({ stream: null, max_tokens: null }))).status, 200);
  }));

// ---- the reply ----------------------------------------------------------------------

test('deterministic reply: "Echo: " + the last user message, honest usage, chatcmpl ids', T,
  () => withProvider([], async ({ port }) => {
    // fixed numbers first: P = (2 + 3) + (3 + 3) = 11, C = words("Echo: hello big world") = 4
    let r = await chat(port, { model: 'gpt-test', messages: [
      { role: 'system', content: 'be brief' }, user('hello big world')] });
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^application\/json/);
    assert.equal(r.json.choices[0].message.content, 'Echo: hello big world');
    assert.deepEqual(r.json.usage, { prompt_tokens: 11, completion_tokens: 4, total_tokens: 15 });

    const req = { model: 'some-model', temperature: 0.3, top_p: 1, messages: [
      { role: 'system', content: 'You are  terse.' },
      user('first question'),
      { role: 'assistant', content: 'first\tanswer\nhere' },
      { role: 'tool', content: '' },
      user('  what is\n\nthe   answer?  ')] };
    const before = Math.floor(Date.now() / 1000);
    const a = await chat(port, req);
    const b = await chat(port, req);
    const after = Math.ceil(Date.now() / 1000);
    const want = expected(req);
    for (const x of [a, b]) {
      assert.equal(x.status, 200);
      const j = x.json;
      assert.match(j.id, /^chatcmpl-\d+$/);
      assert.equal(j.object, 'chat.completion');
      assert.ok(j.created >= before && j.created <= after, `created ${j.created}`);
      assert.equal(j.model, 'some-model');
      assert.deepEqual(j.choices, [{ index: 0, message: { role: 'assistant', content: want.content },
        finish_reason: 'stop' }]);
      assert.deepEqual(j.usage, want.usage);
    }
    assert.equal(want.content, 'Echo:   what is\n\nthe   answer?  ');
    assert.equal(Number(b.json.id.slice(9)), Number(a.json.id.slice(9)) + 1, 'ids count up');
    r = await chat(port, { model: 'x', messages: [{ role: 'system', content: 'no user here' }] });
    assert.equal(r.json.choices[0].message.content, 'Echo: ');
    assert.deepEqual(r.json.usage, { prompt_tokens: 6, completion_tokens: 1, total_tokens: 7 });
  }));

test('developer role and content as text parts (what OpenAI clients send) are counted too', T,
  () => withProvider([], async ({ port }) => {
    const req = { model: 'gpt-test', messages: [
      { role: 'developer', content: 'rules one two' },
      { role: 'user', content: [{ type: 'text', text: 'part one' }, { type: 'text', text: 'part two here' }] }] };
    const r = await chat(port, req);
    assert.equal(r.status, 200);
    assert.equal(r.json.choices[0].message.content, 'Echo: part one\npart two here');
    assert.deepEqual(r.json.usage, expected(req).usage);
    assert.deepEqual(r.json.usage, { prompt_tokens: 14, completion_tokens: 6, total_tokens: 20 });
  }));

test('max_tokens cuts the reply to that many words with finish_reason "length"', T,
  () => withProvider([], async ({ port }) => {
    const ask = async (extra) => (await chat(port, chatBody('one two  three four five', extra))).json;
    const prompt = 5 + 3;
    let j = await ask({ max_tokens: 3 });
    assert.equal(j.choices[0].message.content, 'Echo: one two');
    assert.equal(j.choices[0].finish_reason, 'length');
    assert.deepEqual(j.usage, { prompt_tokens: prompt, completion_tokens: 3, total_tokens: prompt + 3 });
    j = await ask({ max_tokens: 1 });
    assert.equal(j.choices[0].message.content, 'Echo:');
    assert.equal(j.choices[0].finish_reason, 'length');
    assert.equal(j.usage.completion_tokens, 1);
    j = await ask({ max_tokens: 6 });
    assert.equal(j.choices[0].message.content, 'Echo: one two  three four five');
    assert.equal(j.choices[0].finish_reason, 'stop');
    assert.equal(j.usage.completion_tokens, 6);
    j = await ask({ max_tokens: 1000 });
    assert.equal(j.choices[0].finish_reason, 'stop');
    assert.equal(j.usage.total_tokens, prompt + 6);
    j = await ask({ max_completion_tokens: 2 });
    assert.equal(j.choices[0].message.content, 'Echo: one');
    assert.equal(j.choices[0].finish_reason, 'length');
    assert.equal(j.usage.completion_tokens, 2);
  }));

// ---- API key ------------------------------------------------------------------------

test('--api-key: a missing or wrong "Authorization: Bearer" is 401 in OpenAI\'s shape', T,
  () => withProvider(['--api-key', 'sk-test-123'], async ({ port }) => {
    const body = chatBody('hi');
    for (const headers of [{}, { Authorization: 'Bearer wrong' }, { Authorization: 'Bearer sk-test-1234' },
      { Authorization: 'Basic sk-test-123' }, { Authorization: 'sk-test-123' }]) {
      const r = await chat(port, body, { headers });
      assertOpenAiError(r, 401, { code: 'invalid_api_key' });
    }
    let r = await chat(port, body, { headers: { Authorization: 'Bearer sk-test-123' } });
    assert.equal(r.status, 200);
    assert.equal(r.json.choices[0].message.content, 'Echo: hi');
    assertOpenAiError(await request(port, { path: '/v1/models' }), 401, { code: 'invalid_api_key' });
    r = await request(port, { path: '/v1/models', headers: { Authorization: 'Bearer sk-test-123' } });
    assert.equal(r.status, 200);
    const s = await stats(port); // the test endpoints need no key
    assert.deepEqual(s.byStatus, { 200: 1, 401: 5 });
    assert.equal(s.requests, 6);
  }));

// ---- markers ------------------------------------------------------------------------

test('markers [[status:500]], [[status:429]] (Retry-After), [[status:400]] answer that status', T,
  async () => {
    await withProvider([], async ({ port }) => {
      let r = await say(port, 'please fail [[status:500]] now');
      assertOpenAiError(r, 500, { type: 'server_error' });
      assert.equal(r.headers['retry-after'], undefined);
      r = await say(port, '[[status:429]]');
      assertOpenAiError(r, 429, { type: 'rate_limit_error', code: 'rate_limit_exceeded' });
      assert.equal(r.headers['retry-after'], '1', 'the default --retry-after is 1');
      r = await say(port, 'bad one [[status:400]]');
      assertOpenAiError(r, 400);
      r = await say(port, '[[status:503]]');
      assertOpenAiError(r, 503, { type: 'server_error' });
      r = await say(port, '[[status:200]] fine');
      assert.equal(r.json.choices[0].message.content, 'Echo: [[status:200]] fine');
      r = await say(port, 'not markers: [[status:99]] [[status:abc]] [[status:500]');
      assert.equal(r.status, 200);
      // only the last user message carries markers
      r = await chat(port, { model: 'm', messages: [user('[[status:500]]'), { role: 'assistant', content: 'x' }, user('ok')] });
      assert.equal(r.status, 200);
      const s = await stats(port);
      assert.deepEqual(s.byStatus, { 200: 3, 400: 1, 429: 1, 500: 1, 503: 1 });
    });
    await withProvider(['--retry-after', '7'], async ({ port }) => {
      const r = await say(port, '[[status:429]]');
      assert.equal(r.status, 429);
      assert.equal(r.headers['retry-after'], '7');
    });
  });

test('[[delay:MS]] holds the answer that long (in flight meanwhile); --latency-ms delays every answer', T,
  async () => {
    await withProvider([], async ({ port }) => {
      const t0 = Date.now();
      const pending = say(port, 'slow [[delay:700]]');
      const s = await statsUntil(port, (x) => x.requests === 1);
      assert.equal(s.inFlight, 1, 'in flight while it waits');
      const r = await pending;
      assert.ok(Date.now() - t0 >= 650, `answered after ${Date.now() - t0} ms`);
      assert.equal(r.status, 200);
      assert.equal(r.json.choices[0].message.content, 'Echo: slow [[delay:700]]');
      assert.equal((await stats(port)).inFlight, 0);
    });
    await withProvider(['--latency-ms', '300'], async ({ port }) => {
      const t0 = Date.now();
      assert.equal((await say(port, 'hi')).status, 200);
      assert.ok(Date.now() - t0 >= 280, `answered after ${Date.now() - t0} ms`);
      const t1 = Date.now();
      assert.equal((await say(port, '[[status:500]]')).status, 500);
      assert.ok(Date.now() - t1 >= 280, 'injected errors wait the latency too');
    });
  });

test('[[hang]] never answers; the client aborts after 300 ms and the provider stays healthy', T,
  () => withProvider([], async ({ port }) => {
    const took = await abortedAfter(port, 'wait forever [[hang]]', 300);
    assert.ok(took >= 290, `aborted after ${took} ms`);
    // twenty at once, too
    await Promise.all(Array.from({ length: 20 }, () => abortedAfter(port, '[[hang]]', 300)));
    const s = await statsUntil(port, (x) => x.inFlight === 0);
    assert.equal(s.requests, 21);
    assert.equal(s.maxInFlight >= 20, true, `maxInFlight ${s.maxInFlight}`);
    assert.deepEqual(s.byStatus, {}, 'a hang has no answer');
    const r = await say(port, 'still there?');
    assert.equal(r.status, 200);
    assert.equal(r.json.choices[0].message.content, 'Echo: still there?');
    // a client that half-closes after its request: a hang ends at once, an answer still comes
    const req = (content) => {
      const body = JSON.stringify(chatBody(content));
      return `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    };
    assert.deepEqual(statuses(await raw(port, req('[[hang]]'), { end: true })), []);
    // (the EOF is seen while the first waits; the hang behind it must still end)
    let out = await raw(port, req('one [[delay:100]]') + req('[[hang]]'), { end: true });
    assert.deepEqual(statuses(out), [200]);
    out = await raw(port, req('one') + req('two [[delay:50]]'), { end: true });
    assert.deepEqual(statuses(out), [200, 200]);
    assert.match(out, /Echo: two/);
    await statsUntil(port, (x) => x.inFlight === 0 && x.requests === 27);
  }));

// ---- /_control ----------------------------------------------------------------------

test('/_control failNext: the next N chat requests answer failStatus (default 500)', T,
  () => withProvider([], async ({ port }) => {
    let r = await control(port, { failNext: 2 });
    assert.equal(r.status, 200);
    assert.equal(r.json.failNext, 2);
    assert.equal(r.json.failStatus, 500);
    assertOpenAiError(await say(port, 'a'), 500, { type: 'server_error' });
    assertOpenAiError(await say(port, 'b'), 500, { type: 'server_error' });
    assert.equal((await say(port, 'c')).status, 200);
    r = await control(port, { failNext: 1, failStatus: 503 });
    assert.equal(r.json.failNext, 1);
    assert.equal((await say(port, 'd')).status, 503);
    assert.equal((await say(port, 'e')).status, 200);
    await control(port, { failNext: 1, failStatus: 429, retryAfter: 3 });
    r = await say(port, 'f');
    assert.equal(r.status, 429);
    assert.equal(r.headers['retry-after'], '3');
    // a request whose marker picks its outcome, or that is invalid, leaves failNext alone
    await control(port, { failNext: 1, failStatus: 502 });
    assert.equal((await say(port, '[[status:400]]')).status, 400);
    assert.equal((await chat(port, { model: 'm' })).status, 400);
    assert.equal((await say(port, 'g')).status, 502);
    assert.equal((await say(port, 'h')).status, 200);
    assert.equal((await control(port, {})).json.failNext, 0);
  }));

test('/_control errorRate 1.0 fails every request with errorStatus; --error-rate/--error-status too', T,
  async () => {
    await withProvider([], async ({ port }) => {
      let r = await control(port, { errorRate: 1.0 });
      assert.equal(r.json.errorRate, 1);
      assert.equal(r.json.errorStatus, 500);
      for (let i = 0; i < 10; i++) assertOpenAiError(await say(port, `x${i}`), 500, { type: 'server_error' });
      await control(port, { errorStatus: 502 });
      assert.equal((await say(port, 'y')).status, 502);
      await control(port, { errorRate: 0 });
      assert.equal((await say(port, 'z')).status, 200);
      assert.deepEqual((await stats(port)).byStatus, { 200: 1, 500: 10, 502: 1 });
    });
    await withProvider(['--error-rate', '1', '--error-status', '503'], async ({ port }) => {
      assert.equal((await say(port, 'x')).status, 503);
    });
  });

test('/_control rate429 1.0 answers 429 with Retry-After = retryAfter; --rate-429 too', T, async () => {
  await withProvider([], async ({ port }) => {
    const r0 = await control(port, { rate429: 1, retryAfter: 4 });
    assert.equal(r0.json.rate429, 1);
    assert.equal(r0.json.retryAfter, 4);
    for (let i = 0; i < 5; i++) {
      const r = await say(port, 'x');
      assertOpenAiError(r, 429, { type: 'rate_limit_error', code: 'rate_limit_exceeded' });
      assert.equal(r.headers['retry-after'], '4');
    }
    await control(port, { rate429: 0 });
    assert.equal((await say(port, 'x')).status, 200);
  });
  await withProvider(['--rate-429', '1', '--retry-after', '9'], async ({ port }) => {
    const r = await say(port, 'x');
    assert.equal(r.status, 429);
    assert.equal(r.headers['retry-after'], '9');
  });
});

test('/_control hangRate 1.0 hangs every request until the client goes away; --hang-rate too', T,
  async () => {
    await withProvider([], async ({ port }) => {
      assert.equal((await control(port, { hangRate: 1 })).json.hangRate, 1);
      await abortedAfter(port, 'x', 300);
      await abortedAfter(port, 'y', 300);
      await statsUntil(port, (s) => s.inFlight === 0 && s.requests === 2);
      await control(port, { hangRate: 0 });
      assert.equal((await say(port, 'z')).status, 200);
    });
    await withProvider(['--hang-rate', '1'], async ({ port }) => {
      await abortedAfter(port, 'x', 300);
      await statsUntil(port, (s) => s.inFlight === 0);
    });
  });

test('--seed makes the random knobs replay the same choices', T, async () => {
  const run = () => withProvider(['--seed', '42', '--error-rate', '0.5'], async ({ port }) => {
    const seen = [];
    for (let i = 0; i < 30; i++) seen.push((await say(port, 'x')).status);
    run.seen.push(seen);
  });
  run.seen = [];
  await run();
  await run();
  assert.deepEqual(run.seen[0], run.seen[1]);
  assert.ok(run.seen[0].includes(200) && run.seen[0].includes(500), run.seen[0].join(','));
});

test('/_control checks every setting before applying any: 400 names the bad one', T,
  () => withProvider([], async ({ port }) => {
    assertOpenAiError(await control(port, 'not json'), 400);
    assertOpenAiError(await control(port, [1]), 400);
    assertOpenAiError(await control(port, { bogus: 1 }), 400, { param: 'bogus' });
    assertOpenAiError(await control(port, { errorRate: 2 }), 400, { param: 'errorRate' });
    assertOpenAiError(await control(port, { hangRate: -0.1 }), 400, { param: 'hangRate' });
    assertOpenAiError(await control(port, { latencyMs: '5' }), 400, { param: 'latencyMs' });
    assertOpenAiError(await control(port, { failNext: 1.5 }), 400, { param: 'failNext' });
    assertOpenAiError(await control(port, { failStatus: 200 }), 400, { param: 'failStatus' });
    assertOpenAiError(await control(port, { failNext: 3, errorStatus: 700 }), 400, { param: 'errorStatus' });
    const r = await control(port, {});
    assert.deepEqual(r.json, { latencyMs: 0, jitterMs: 0, errorRate: 0, errorStatus: 500, rate429: 0,
      retryAfter: 1, hangRate: 0, failNext: 0, failStatus: 500 });
    const g = await request(port, { path: '/_control' });
    assertOpenAiError(g, 405);
    assert.equal(g.headers.allow, 'POST');
  }));

// ---- /_stats, /_reset ---------------------------------------------------------------

test('/_stats counts requests, answers by status and arrival times; /_reset zeroes them', T,
  () => withProvider([], async ({ port }) => {
    let s = await stats(port);
    assert.deepEqual(s, { requests: 0, inFlight: 0, maxInFlight: 0, byStatus: {}, arrivals: [] });
    const t0 = Date.now();
    await say(port, 'a');
    await say(port, 'b');
    await chat(port, { model: 'm' });
    await say(port, '[[status:500]]');
    await request(port, { path: '/v1/models' }); // not a chat request
    const t1 = Date.now();
    s = await stats(port);
    assert.equal(s.requests, 4);
    assert.deepEqual(s.byStatus, { 200: 2, 400: 1, 500: 1 });
    assert.equal(s.inFlight, 0);
    assert.ok(s.maxInFlight >= 1);
    assert.equal(s.arrivals.length, 4);
    for (let i = 0; i < 4; i++) {
      assert.ok(s.arrivals[i] >= t0 - 1000 && s.arrivals[i] <= t1 + 1000, `arrival ${s.arrivals[i]}`);
      if (i) assert.ok(s.arrivals[i] >= s.arrivals[i - 1], 'arrivals in order');
    }
    const r = await request(port, { method: 'POST', path: '/_reset' });
    assert.equal(r.status, 200);
    s = await stats(port);
    assert.deepEqual(s, { requests: 0, inFlight: 0, maxInFlight: 0, byStatus: {}, arrivals: [] });
    // the knobs survive a reset
    await control(port, { failNext: 1 });
    await request(port, { method: 'POST', path: '/_reset' });
    assert.equal((await say(port, 'x')).status, 500);
  }));

test('arrivals keeps the last 10,000 chat requests (10,050 pipelined on one connection)', T,
  () => withProvider([], async ({ port }) => {
    const N = 10050;
    const one = (i, last) => {
      const body = JSON.stringify(chatBody(`n${i}`));
      return `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n${last ? 'Connection: close\r\n' : ''}\r\n${body}`;
    };
    const all = Array.from({ length: N }, (_, i) => one(i, i === N - 1)).join('');
    const out = await raw(port, all, { timeoutMs: 45000 });
    const st = statuses(out);
    assert.equal(st.length, N);
    assert.ok(st.every((x) => x === 200));
    // answered in order
    const contents = [...out.matchAll(/"content":"Echo: (n\d+)"/g)].map((m) => m[1]);
    assert.equal(contents.length, N);
    assert.equal(contents[0], 'n0');
    assert.equal(contents[N - 1], `n${N - 1}`);
    const s = await stats(port);
    assert.equal(s.requests, N);
    assert.equal(s.arrivals.length, 10000);
    for (let i = 1; i < s.arrivals.length; i++) assert.ok(s.arrivals[i] >= s.arrivals[i - 1]);
    assert.deepEqual(s.byStatus, { 200: N });
  }));

test('500 concurrent requests at 100 ms latency are all in flight together (maxInFlight >= 400)', T,
  () => withProvider(['--latency-ms', '100'], async ({ port }) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1000 });
    try {
      const rs = await Promise.all(Array.from({ length: 500 }, (_, i) => say(port, `req ${i}`, { agent })));
      rs.forEach((r, i) => {
        assert.equal(r.status, 200);
        assert.equal(r.json.choices[0].message.content, `Echo: req ${i}`);
      });
      const s = await stats(port);
      assert.equal(s.requests, 500);
      assert.equal(s.inFlight, 0);
      assert.ok(s.maxInFlight >= 400, `maxInFlight ${s.maxInFlight}`);
      assert.deepEqual(s.byStatus, { 200: 500 });
    } finally {
      agent.destroy();
    }
  }));

// ---- HTTP ---------------------------------------------------------------------------

test('keep-alive: one connection carries many requests; HTTP/1.0 closes unless asked', T,
  () => withProvider([], async ({ port }) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const rs = [];
      for (let i = 0; i < 4; i++) rs.push(await say(port, `k${i}`, { agent }));
      rs.push(await request(port, { path: '/v1/models', agent }));
      rs.push(await request(port, { method: 'POST', path: '/_control', body: {}, agent }));
      rs.push(await say(port, '[[status:500]]', { agent }));
      rs.push(await chat(port, { model: '' }, { agent }));
      rs.forEach((r, i) => {
        assert.equal(r.headers.connection, 'keep-alive');
        assert.equal(r.localPort, rs[0].localPort, 'the same connection');
        if (i) assert.equal(r.reused, true, `request ${i} reused the connection`);
      });
    } finally {
      agent.destroy();
    }
    const out10 = await raw(port, 'GET /v1/models HTTP/1.0\r\n\r\n');
    assert.deepEqual(statuses(out10), [200]);
    assert.match(out10, /\r\nConnection: close\r\n/);
    const ka10 = await raw(port, 'GET /v1/models HTTP/1.0\r\nConnection: keep-alive\r\n\r\n' +
      'GET /_stats HTTP/1.0\r\n\r\n');
    assert.deepEqual(statuses(ka10), [200, 200]);
  }));

test('a 5 MiB body is refused with 413 (and the connection closed); a 3 MiB one is answered', T,
  () => withProvider([], async ({ port }) => {
    const big = Buffer.from(JSON.stringify(chatBody('w '.repeat(5 * 1024 * 1024 / 2))));
    assert.ok(big.length > 5 * 1024 * 1024);
    const r = await chat(port, big);
    assertOpenAiError(r, 413);
    assert.equal(r.headers.connection, 'close');
    // declared but not sent: refused at once, from the head alone
    const out = await raw(port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n' +
      `Content-Length: ${5 * 1024 * 1024}\r\n\r\n{"model":`);
    assert.deepEqual(statuses(out), [413]);
    assert.match(out, /\r\nConnection: close\r\n/);
    const text = 'ab '.repeat(1024 * 1024);
    const ok = await say(port, text);
    assert.equal(ok.status, 200);
    assert.equal(ok.json.usage.prompt_tokens, 1024 * 1024 + 3);
    assert.equal(ok.json.usage.completion_tokens, 1024 * 1024 + 1);
    assert.equal(ok.json.choices[0].message.content, `Echo: ${text}`);
    assert.equal((await stats(port)).requests, 1, 'the refused bodies never reached the chat handler');
  }));

test('headers over 16 KiB: 431, connection closed', T, () => withProvider([], async ({ port }) => {
  const out = await raw(port, `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`);
  assert.deepEqual(statuses(out), [431]);
  assert.match(out, /\r\nConnection: close\r\n/);
  const long = await raw(port, `GET /${'a'.repeat(2000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
  assert.deepEqual(statuses(long), [414]);
  assert.equal((await request(port, { path: '/v1/models' })).status, 200);
}));

test('malformed HTTP: 400 in OpenAI\'s shape, then the server closes the connection', T,
  () => withProvider([], async ({ port }) => {
    const cases = [
      'NONSENSE\r\n\r\n',
      'GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n',
      'GET /v1/models\r\n\r\n',
      'GET  /v1/models HTTP/1.1\r\n\r\n',
      'GET http://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /v1/models HTTP/1.1\nHost: x\n\n',
      'GET /v1/models HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n',
      'GET /v1/models HTTP/1.1\r\nBad Header: x\r\n\r\n',
      'GET /v1/models HTTP/1.1\r\nX: a\x01b\r\n\r\n',
      'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n',
      'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
      'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}',
      Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1]), // a TLS hello: no line end at all
    ];
    for (const c of cases) {
      const out = await raw(port, c);
      const what = JSON.stringify(c.toString('latin1'));
      assert.deepEqual(statuses(out), [400], `${what} → ${out.slice(0, 80)}`);
      assert.match(out, /\r\nConnection: close\r\n/, what);
      const body = JSON.parse(out.slice(out.indexOf('\r\n\r\n') + 4));
      assert.equal(body.error.type, 'invalid_request_error', what);
      assert.equal(body.error.code, null);
    }
    // a good request, then garbage on the same connection: 200, then 400 and close
    const out = await raw(port, 'GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\nBLAH BLAH BLAH\r\n\r\n');
    assert.deepEqual(statuses(out), [200, 400]);
    assert.equal((await stats(port)).requests, 0);
    assert.equal((await say(port, 'fine')).status, 200);
  }));

test('Transfer-Encoding is 411 (bodies by Content-Length only); unknown path 404; wrong method 405', T,
  () => withProvider([], async ({ port }) => {
    const out = await raw(port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n' +
      'Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n');
    assert.deepEqual(statuses(out), [411]);
    assertOpenAiError(await request(port, { path: '/v1/nothing' }), 404);
    const r = await request(port, { path: '/v1/chat/completions' });
    assertOpenAiError(r, 405);
    assert.equal(r.headers.allow, 'POST');
    assert.equal((await request(port, { path: '/_stats?pretty=1' })).status, 200, 'a query string is ignored');
  }));

test('Expect: 100-continue gets "100 Continue" before the body is sent', T,
  () => withProvider([], async ({ port }) => {
    const body = JSON.stringify(chatBody('after continue'));
    let sent = false;
    const out = await raw(port, 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' +
      `Expect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`, {
      onData: (s, text) => {
        if (!sent && text.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) { sent = true; s.write(body); }
      },
    });
    assert.ok(sent);
    assert.deepEqual(statuses(out), [100, 200]);
    assert.match(out, /"content":"Echo: after continue"/);
  }));

test('--max-conns: connections over the limit are closed at once; room frees when one closes', T,
  () => withProvider(['--max-conns', '5'], async ({ port }) => {
    // five connections, each proven accepted by an answer
    const open = () => new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('GET /_stats HTTP/1.1\r\nHost: x\r\n\r\n'));
      s.once('data', () => resolve(s));
      s.on('error', reject);
      setTimeout(() => reject(new Error('no answer')), 5000);
    });
    const socks = [];
    try {
      for (let i = 0; i < 5; i++) socks.push(await open());
      await assert.rejects(request(port, { path: '/_stats' }), (e) =>
        ['ECONNRESET', 'EPIPE'].includes(e.code) || /socket hang up/.test(e.message));
      socks.shift().destroy();
      const end = Date.now() + 5000;
      for (;;) { // the provider frees the slot when it sees the close
        const r = await request(port, { path: '/_stats' }).catch((e) => e);
        if (r.status === 200) break;
        assert.ok(Date.now() < end, `no room after a close: ${r.message}`);
        await sleep(20);
      }
    } finally {
      for (const s of socks) s.destroy();
    }
  }));

// ---- shutdown -----------------------------------------------------------------------

test('SIGTERM with idle, waiting and hanging connections open: exit 0; SIGINT too', T, async () => {
  for (const sig of ['SIGTERM', 'SIGINT']) {
    const p = await startProvider(['--latency-ms', '5000']);
    try {
      const agent = new http.Agent({ keepAlive: true });
      try {
        await request(p.port, { path: '/v1/models', agent }); // leaves an idle keep-alive connection
        const waiting = say(p.port, 'slow').catch((e) => e);
        const hanging = say(p.port, '[[hang]]').catch((e) => e);
        await statsUntil(p.port, (s) => s.inFlight === 2);
        const r = await stopProvider(p, sig);
        assert.deepEqual(r, { code: 0, signal: null }, `${sig}: ${p.stderr()}`);
        assert.equal(p.stderr(), '');
        assert.ok((await waiting) instanceof Error, 'the waiting request was cut');
        assert.ok((await hanging) instanceof Error, 'the hanging request was cut');
      } finally {
        agent.destroy();
      }
    } finally {
      if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
    }
  }
});
