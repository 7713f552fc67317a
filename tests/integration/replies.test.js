'use strict';
// Replies to POST /v1/jobs written by the enqueue sender after the request thread went on
// (api/conn.h): in order when a client pipelines, whole before a connection closes,
// harmless when the client is gone. Raw sockets, so that the bytes on the wire are seen.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { withStack, waitFor, ID_RE } = require('./lib/stack');

// Writes bytes on a new connection; resolves with everything read once the server ends it.
function exchange(port, bytes, { timeoutMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`the connection did not end within ${timeoutMs} ms; read: ` +
        Buffer.concat(chunks).toString('latin1').slice(-300)));
    }, timeoutMs);
    s.on('connect', () => s.write(bytes));
    s.on('data', (c) => chunks.push(c));
    s.on('end', () => {
      clearTimeout(timer);
      s.end();
      resolve(Buffer.concat(chunks));
    });
    s.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

// The HTTP/1.1 responses in buf, in order: {status, headers (lower-case names), body}.
// Throws when bytes are left over or a body is short.
function responses(buf) {
  const out = [];
  let i = 0;
  while (i < buf.length) {
    const end = buf.indexOf('\r\n\r\n', i);
    if (end < 0) throw new Error(`a response head is cut: ${buf.slice(i).toString('latin1')}`);
    const lines = buf.slice(i, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(lines[0])[1]);
    const headers = {};
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
    }
    const len = Number(headers['content-length'] || 0);
    if (end + 4 + len > buf.length) throw new Error(`a body is short: ${lines[0]}`);
    out.push({ status, headers, body: buf.slice(end + 4, end + 4 + len).toString('utf8') });
    i = end + 4 + len;
  }
  return out;
}

// A request after which the server closes the connection (the replies before it are
// deferred ones: their connection stays open).
const CLOSING = 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';

function post(s, body, extra = '', version = '1.1') {
  const text = JSON.stringify(body);
  return `POST /v1/jobs HTTP/${version}\r\nHost: x\r\nAuthorization: Bearer ${s.token}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${extra}\r\n${text}`;
}

test('40 POSTs pipelined on one connection, then a GET: 41 replies in order, each with its own job and request id',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const n = 40;
    let bytes = '';
    for (let i = 0; i < n; i++) {
      bytes += post(s, { type: 'noop', queue: 'pipe', input: { n: i } }, `X-Request-Id: pipe-${i}\r\n`);
    }
    bytes += CLOSING;
    const got = responses(await exchange(s.port, bytes));
    assert.equal(got.length, n + 1, 'one reply per request');
    const ids = new Set();
    for (let i = 0; i < n; i++) {
      const r = got[i];
      assert.equal(r.status, 202, r.body);
      assert.equal(r.headers['x-request-id'], `pipe-${i}`, 'the reply of request i comes i-th');
      const job = JSON.parse(r.body);
      assert.deepEqual(job.input, { n: i });
      assert.match(job.id, ID_RE);
      assert.equal(r.headers.location, `/v1/jobs/${job.id}`);
      ids.add(job.id);
    }
    assert.equal(ids.size, n, 'every job its own id');
    assert.equal(got[n].status, 200, 'the GET after them');
    assert.equal(JSON.parse(got[n].body).status, 'ok');
    for (const id of ids) assert.equal((await s.job(id)).status, 'queued');
    assert.equal((await s.queueStats('pipe')).ready, n, 'each stored once');
  }));

test('the 202 shows the input byte for byte as GET does (reals with 12 digits, integers, text)',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const inputText = (body) => body.slice(body.indexOf('"input":'), body.indexOf(',"progress":'));
    for (const input of [{ a: 0.1, b: [1, { c: 2.5e-7 }], i: 3 }, { t: 'no reals', n: [1, 2] }]) {
      const [r] = responses(await exchange(s.port, post(s, { type: 'noop', queue: 'shown', input }) + CLOSING));
      assert.equal(r.status, 202, r.body);
      const got = await s.api('GET', `/v1/jobs/${JSON.parse(r.body).id}`);
      assert.equal(got.status, 200, got.text);
      assert.equal(inputText(r.body), inputText(got.text));
      assert.deepEqual(JSON.parse(r.body).input, input);
    }
    const [r] = responses(await exchange(s.port, post(s, { type: 'noop', input: { a: 0.1 } }) + CLOSING));
    assert.match(r.body, /"input":\{"a":0\.1\}/);
  }));

test('a POST, then a request civetweb cannot parse, pipelined: the 202 first, whole, then the 400',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const buf = await exchange(s.port,
      post(s, { type: 'noop', queue: 'garbled', input: { n: 1 } }) + 'GET /healthz HTTP/1.1\r\nHost: x\r\nnot a header\r\n\r\n');
    const text = buf.toString('latin1');
    const second = text.indexOf('HTTP/1.1 400');
    assert.ok(second > 0, `a 400 after the 202: ${text.slice(0, 200)}`);
    const [first] = responses(buf.slice(0, second));
    assert.equal(first.status, 202, first.body);
    assert.deepEqual(JSON.parse(first.body).input, { n: 1 });
    assert.equal((await s.queueStats('garbled')).ready, 1);
  }));

test('clients that send a POST and shut their side at once: each still reads the whole 202 before the server closes',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const n = 20;
    const got = await Promise.all(Array.from({ length: n }, (_, i) => new Promise((resolve, reject) => {
      const c = net.connect(s.port, '127.0.0.1', () => c.end(post(s, { type: 'noop', queue: 'halfclosed', input: { i } })));
      const chunks = [];
      c.on('data', (d) => chunks.push(d));
      c.on('end', () => resolve(Buffer.concat(chunks)));
      c.on('error', reject);
      setTimeout(() => { c.destroy(); reject(new Error('no end within 15 s')); }, 15000).unref();
    })));
    got.forEach((buf, i) => {
      const rs = responses(buf);
      assert.equal(rs.length, 1, `client ${i}: one reply`);
      assert.equal(rs[0].status, 202, rs[0].body);
      assert.deepEqual(JSON.parse(rs[0].body).input, { i });
    });
    assert.equal((await s.queueStats('halfclosed')).ready, n);
  }));

test('a POST with Connection: close, and one over HTTP/1.0 (answered by the request thread): the whole 202, then the server ends the connection',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    for (const [extra, version] of [['Connection: close\r\n', '1.1'], ['', '1.0']]) {
      const big = 'x'.repeat(12000); // a reply larger than one TCP segment
      const got = responses(await exchange(s.port,
        post(s, { type: 'noop', queue: 'closing', input: { big } }, extra, version)));
      assert.equal(got.length, 1);
      assert.equal(got[0].status, 202, got[0].body);
      assert.equal(got[0].headers.connection, 'close');
      assert.equal(JSON.parse(got[0].body).input.big, big);
    }
    assert.equal((await s.queueStats('closing')).ready, 2);
  }));

test('clients that send a POST and leave at once: every job is stored, the api serves on',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const n = 40;
    await Promise.all(Array.from({ length: n }, (_, i) => new Promise((resolve, reject) => {
      const c = net.connect(s.port, '127.0.0.1', () => {
        c.end(post(s, { type: 'noop', queue: 'gone', input: { i } }), () => {
          c.destroy(); // reads nothing: the reply meets a closed socket
          resolve();
        });
      });
      c.on('error', reject);
    })));
    await waitFor(async () => ((await s.queueStats('gone')) || {}).ready === n,
      { timeout: 15000, what: `${n} jobs in queue gone` });
    const after = await s.enqueue({ type: 'noop', queue: 'gone' });
    assert.equal(after.status, 202);
    assert.equal((await s.api('GET', '/healthz', { token: null })).status, 200);
    assert.equal(s.unexpectedExits().length, 0, 'the api is alive');
  }));

test('SIGTERM to the api under POST load: it exits 0, and every 202 it sent names a stored job',
  { timeout: 60000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const accepted = [];
    let stop = false;
    const lane = async () => {
      while (!stop) {
        try {
          const r = await s.api('POST', '/v1/jobs', { body: { type: 'noop', queue: 'term' }, timeoutMs: 10000 });
          if (r.status === 202) accepted.push(r.json.id);
          else if (r.status !== 503) throw new Error(`unexpected ${r.status} ${r.text}`);
        } catch (e) {
          if (/unexpected/.test(e.message)) throw e;
          // refused or closed while stopping: the client may retry
          if (s.apiProc.exit) return;
        }
      }
    };
    const lanes = Array.from({ length: 16 }, lane);
    await waitFor(async () => accepted.length >= 300, { timeout: 20000, what: '300 jobs accepted' });
    const exit = await s.apiProc.signal('SIGTERM');
    stop = true;
    await Promise.all(lanes);
    assert.equal(exit.code, 0, `the api exits cleanly (${s.apiProc.describeExit()})`);
    const states = await s.evalOverIds(`local out = {}
for i = 2, #ARGV do out[#out + 1] = tostring(redis.call('HGET', ARGV[1] .. ARGV[i], 'status')) end
return out`, accepted);
    assert.equal(states.length, accepted.length);
    assert.deepEqual([...new Set(states)], ['queued'], 'every accepted job is stored');
  }));
