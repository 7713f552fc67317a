'use strict';
// ai.chat through the queue: chat completions (sync and async), the seed's /v1/ai/chat,
// models, retries, provider errors, Retry-After, timeouts, fallback, and the per-provider
// rate limit across two workers — against our OpenAI-compatible test provider
// (bin/conveyor-test-provider) on loopback.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { withStack, waitFor, sleep, assertError } = require('./lib/stack');

const PROVIDER = process.env.CONVEYOR_TEST_PROVIDER ||
  path.resolve(__dirname, '../../bin/conveyor-test-provider');

// A provider process on a free port; stop() ends it.
async function startProvider(args = []) {
  const p = spawn('timeout', ['120', PROVIDER, '--port', '0', ...args],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('provider did not start')), 10000);
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening on [\d.]+:(\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    p.on('exit', (code) => { clearTimeout(timer); reject(new Error(`provider exited ${code}`)); });
  });
  const call = (method, urlPath, body) => new Promise((resolve, reject) => {
    const data = body === undefined ? null : JSON.stringify(body);
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath,
      headers: data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {} },
    (res) => {
      let t = '';
      res.on('data', (d) => { t += d; });
      res.on('end', () => resolve({ status: res.statusCode, json: t ? JSON.parse(t) : null }));
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
  return {
    port,
    url: `http://127.0.0.1:${port}/v1`,
    control: (settings) => call('POST', '/_control', settings),
    stats: async () => (await call('GET', '/_stats')).json,
    stop: () => { p.kill('SIGTERM'); },
  };
}

// A port nothing listens on (connection refused).
async function deadPort() {
  const srv = http.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

// Loads providers and models into the stack's schema with `conveyor models load`.
async function loadModels(s, doc) {
  const file = path.join(os.tmpdir(), `cv-models-${process.pid}-${Date.now()}-${Math.random()}.json`);
  fs.writeFileSync(file, JSON.stringify(doc));
  try {
    const r = await s.cli(['models', 'load', file]);
    assert.equal(r.code, 0, `models load: ${r.stderr}`);
  } finally {
    fs.unlinkSync(file);
  }
}

function provider(name, url, extra = {}) {
  return { name, baseUrl: url, timeoutMs: 5000, connectTimeoutMs: 1000, ...extra };
}

function model(id, providers, extra = {}) {
  return { id, name: id.toUpperCase(), providers, maxTokens: 100, inputPriceMicros: 3,
    outputPriceMicros: 6, ...extra };
}

const chat = (content, extra = {}) => ({ model: 'm1', messages: [
  { role: 'system', content: 'be brief' }, { role: 'user', content }], ...extra });

// What the test provider answers for a request (its documented deterministic reply).
function expectedUsage(req) {
  const words = (t) => t.split(/\s+/).filter(Boolean).length;
  const prompt = req.messages.reduce((n, m) => n + words(m.content) + 3, 0);
  const last = [...req.messages].reverse().find((m) => m.role === 'user').content;
  const reply = `Echo: ${last}`;
  return { content: reply, prompt, completion: words(reply) };
}

async function withAi(opts, body) {
  const p = await startProvider(opts.providerArgs || []);
  try {
    await withStack({ workers: opts.workers ?? 1, env: { CONVEYOR_BACKOFF_SCALE: '0.001', ...opts.env } },
      async (s) => {
        await loadModels(s, opts.models ? opts.models(p) : {
          providers: [provider('p1', p.url)], models: [model('m1', ['p1'])] });
        await body(s, p);
      });
  } finally {
    p.stop();
  }
}

test('GET /v1/models: loaded models with provider, status, prices in micro-units and maxTokens; OpenAI list shape',
  { timeout: 60000 }, () => withAi({}, async (s) => {
    const r = await s.api('GET', '/v1/models');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    const m = r.json.data.find((x) => x.id === 'm1');
    assert.ok(m, r.text);
    assert.equal(m.object, 'model');
    assert.equal(m.provider, 'p1');
    assert.equal(m.status, 'available');
    assert.equal(m.maxTokens, 100);
    assert.deepEqual(m.pricing, { inputMicrosPerToken: 3, outputMicrosPerToken: 6, currency: 'USD' });
    assert.equal(m.costPerToken, 0.000003);
    assert.deepEqual(r.json.models, r.json.data, 'the seed shape carries the same list');
    assertError(assert, await s.api('GET', '/v1/models', { token: null }), 401, 'UNAUTHORIZED');
  }));

test('sync completion equals the provider\'s answer with honest usage; then async 202 → poll → the same result',
  { timeout: 60000 }, () => withAi({}, async (s, p) => {
    const req = chat('hello there world', { temperature: 0.2, max_tokens: 50 });
    const want = expectedUsage(req);
    const r = await s.api('POST', '/v1/chat/completions', { body: req });
    assert.equal(r.status, 200, r.text);
    const c = r.json;
    assert.equal(c.object, 'chat.completion');
    assert.match(c.id, /^chatcmpl-/);
    assert.equal(c.model, 'm1');
    assert.equal(typeof c.created, 'number');
    assert.equal(c.choices.length, 1);
    assert.equal(c.choices[0].message.role, 'assistant');
    assert.equal(c.choices[0].message.content, want.content);
    assert.equal(c.choices[0].finish_reason, 'stop');
    assert.deepEqual(c.usage, { prompt_tokens: want.prompt, completion_tokens: want.completion,
      total_tokens: want.prompt + want.completion });
    assert.equal(c.conveyor.provider, 'p1');
    assert.equal(typeof c.conveyor.latencyMs, 'number');
    const jobId = r.headers['x-conveyor-job-id'];
    const job = (await s.api('GET', `/v1/jobs/${jobId}`)).json;
    assert.equal(job.type, 'ai.chat');
    assert.equal(job.status, 'succeeded');
    assert.deepEqual(job.result, c, 'the job result is the completion');
    assert.equal((await p.stats()).requests, 1);

    for (const how of [{ headers: { Prefer: 'respond-async' } }, { async: true }]) {
      const body = how.async ? { ...req, async: true } : req;
      const a = await s.api('POST', '/v1/chat/completions', { body, headers: how.headers });
      assert.equal(a.status, 202, a.text);
      assert.equal(a.headers.location, `/v1/jobs/${a.json.id}`);
      const done = await s.waitStatus(a.json.id, ['succeeded']);
      assert.equal(done.result.choices[0].message.content, want.content);
      assert.deepEqual(done.result.usage, c.usage);
      assert.equal(done.input.request.async, undefined, '"async" is not sent to the provider');
    }
  }));

test('POST /v1/ai/chat answers in the seed\'s shape on the same job type',
  { timeout: 60000 }, () => withAi({}, async (s) => {
    const r = await s.api('POST', '/v1/ai/chat', { body: {
      message: 'what is the weather', context: { location: 'New York' }, model: 'm1',
      temperature: 0.7, maxTokens: 20 } });
    assert.equal(r.status, 200, r.text);
    const d = r.json.data;
    assert.equal(d.message, 'Echo: what is the weather');
    assert.equal(d.model, 'm1');
    assert.equal(d.usage.completionTokens, 5);
    assert.equal(d.usage.totalTokens, d.usage.promptTokens + d.usage.completionTokens);
    assert.equal(typeof d.metadata.responseTime, 'number');
    assert.ok(!Number.isNaN(Date.parse(d.timestamp)));
    assertError(assert, await s.api('POST', '/v1/ai/chat', { body: { model: 'm1' } }), 400,
      'INVALID_REQUEST', 'message');
    assertError(assert, await s.api('POST', '/v1/ai/chat', { body: { message: 'x', model: 'm1',
      maxTokens: 101 } }), 400, 'INVALID_REQUEST', 'maxTokens');
  }));

test('a 500 then success: one completion on attempt 2, the failed attempt recorded on the job',
  { timeout: 60000 }, () => withAi({}, async (s, p) => {
    await p.control({ failNext: 1, failStatus: 500 });
    const r = await s.api('POST', '/v1/chat/completions', { body: chat('again please') });
    assert.equal(r.status, 200, r.text);
    const job = (await s.api('GET', `/v1/jobs/${r.headers['x-conveyor-job-id']}`)).json;
    assert.equal(job.status, 'succeeded');
    assert.equal(job.attempt, 2);
    assert.equal(job.attempts.length, 1, `the failed attempt is recorded: ${JSON.stringify(job.attempts)}`);
    assert.equal(job.attempts[0].attempt, 1);
    assert.equal(job.attempts[0].error.code, 'PROVIDER_UNAVAILABLE');
    assert.match(job.attempts[0].error.message, /500/);
    const st = await p.stats();
    assert.equal(st.requests, 2);
    assert.equal(st.byStatus['500'], 1);
    assert.equal(st.byStatus['200'], 1);
  }));

test('a 400 from the provider: failed with PROVIDER_ERROR and its message, not retried',
  { timeout: 60000 }, () => withAi({}, async (s, p) => {
    const r = await s.api('POST', '/v1/chat/completions', { body: chat('bad one [[status:400]]') });
    assertError(assert, r, 502, 'PROVIDER_ERROR');
    assert.match(r.json.error.message, /400/);
    const job = (await s.api('GET', `/v1/jobs/${r.json.error.details.jobId}`)).json;
    assert.equal(job.status, 'failed');
    assert.equal(job.attempt, 1);
    assert.equal(job.error.code, 'PROVIDER_ERROR');
    await sleep(300);
    assert.equal((await p.stats()).requests, 1, 'no retry');
  }));

test('a 429 with Retry-After: 2 — the next attempt waits at least 2 s, then succeeds',
  { timeout: 60000 }, () => withAi({}, async (s, p) => {
    await p.control({ failNext: 1, failStatus: 429, retryAfter: 2 });
    const a = await s.api('POST', '/v1/chat/completions', { body: chat('busy?'),
      headers: { Prefer: 'respond-async' } });
    assert.equal(a.status, 202, a.text);
    const job = await s.waitStatus(a.json.id, ['succeeded'], { timeout: 20000 });
    assert.equal(job.attempt, 2);
    const st = await p.stats();
    assert.equal(st.arrivals.length, 2);
    assert.ok(st.arrivals[1] - st.arrivals[0] >= 2000,
      `the retry came ${st.arrivals[1] - st.arrivals[0]} ms after the 429`);
  }));

test('a provider that hangs: the call times out and the job is retried',
  { timeout: 60000 }, () => withAi({
    models: (p) => ({ providers: [provider('p1', p.url, { timeoutMs: 500 })],
      models: [model('m1', ['p1'])] }),
  }, async (s, p) => {
    await p.control({ hangRate: 1 });
    const a = await s.api('POST', '/v1/chat/completions', { body: chat('slow'),
      headers: { Prefer: 'respond-async' } });
    assert.equal(a.status, 202, a.text);
    await waitFor(async () => (await s.job(a.json.id)).attempts.length >= 1,
      { what: 'a timed-out attempt', timeout: 15000 });
    await p.control({ hangRate: 0 });
    const job = await s.waitStatus(a.json.id, ['succeeded'], { timeout: 20000 });
    assert.ok(job.attempt >= 2);
    assert.match(job.attempts[0].error.message, /time/i);
  }));

test('primary provider down: the fallback answers within the same attempt',
  { timeout: 60000 }, async () => {
    const dead = await deadPort();
    await withAi({
      models: (p) => ({ providers: [provider('down', `http://127.0.0.1:${dead}/v1`), provider('up', p.url)],
        models: [model('m1', ['down', 'up'])] }),
    }, async (s) => {
      const r = await s.api('POST', '/v1/chat/completions', { body: chat('anyone?') });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.conveyor.provider, 'up');
      assert.equal(r.json.conveyor.tried.length, 2);
      assert.equal(r.json.conveyor.tried[0].provider, 'down');
      const job = (await s.api('GET', `/v1/jobs/${r.headers['x-conveyor-job-id']}`)).json;
      assert.equal(job.attempt, 1);
    });
  });

test('a primary provider out of rate-limit slots: the fallback answers; when every provider is out, the slot that frees first is waited for',
  { timeout: 60000 }, () => withAi({
    models: (p) => ({ providers: [provider('p1', p.url, { rateLimit: 1, rateWindowMs: 2000 }),
      provider('p2', p.url, { rateLimit: 1, rateWindowMs: 30000 })],
    models: [model('m1', ['p1', 'p2'])] }),
  }, async (s) => {
    const via = async (what) => {
      const r = await s.api('POST', '/v1/chat/completions', { body: chat(what) });
      assert.equal(r.status, 200, `${what}: ${r.text}`);
      return r.json.conveyor.provider;
    };
    assert.equal(await via('one'), 'p1');
    assert.equal(await via('two'), 'p2', 'p1 has no slot for 2 s: the fallback, at once');
    assert.equal(await via('three'), 'p1', 'both out: p1 frees first (2 s, p2 30 s)');
  }));

test('a 401 from the primary (its key refused): the fallback answers; when every provider refuses, the job fails at once, not retried',
  { timeout: 60000 }, async () => {
    const locked = await startProvider(['--api-key', 'the-right-key']);
    try {
      await withAi({
        env: { TEST_WRONG_KEY: 'a-wrong-key' },
        models: (p) => ({
          providers: [provider('locked', locked.url, { apiKeyRef: 'env:TEST_WRONG_KEY' }),
            provider('open', p.url)],
          models: [model('m1', ['locked', 'open']), model('m2', ['locked'])] }),
      }, async (s) => {
        const r = await s.api('POST', '/v1/chat/completions', { body: chat('who answers?') });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.conveyor.provider, 'open');
        assert.equal(r.json.conveyor.tried[0].provider, 'locked');
        assert.equal(r.json.conveyor.tried[0].status, 401);
        const only = await s.api('POST', '/v1/chat/completions', { body: { ...chat('x'), model: 'm2' } });
        assertError(assert, only, 502, 'PROVIDER_ERROR');
        assert.match(only.json.error.message, /401/);
        const job = (await s.api('GET', `/v1/jobs/${only.json.error.details.jobId}`)).json;
        assert.equal(job.status, 'failed');
        assert.equal(job.attempt, 1, 'not retried');
      });
    } finally {
      locked.stop();
    }
  });

test('per-provider rate limit (4 per 1 s) never exceeded across two worker processes',
  { timeout: 90000 }, () => withAi({
    workers: 2,
    models: (p) => ({ providers: [provider('p1', p.url, { rateLimit: 4, rateWindowMs: 1000 })],
      models: [model('m1', ['p1'])] }),
  }, async (s, p) => {
    const ids = [];
    for (let i = 0; i < 14; i++) {
      const a = await s.api('POST', '/v1/chat/completions', { body: chat(`n ${i}`),
        headers: { Prefer: 'respond-async' } });
      assert.equal(a.status, 202, a.text);
      ids.push(a.json.id);
    }
    await s.waitAll(ids, ['succeeded'], { timeout: 30000 });
    const { arrivals, byStatus } = await p.stats();
    assert.equal(arrivals.length, 14);
    assert.equal(byStatus['429'] || 0, 0);
    const t = [...arrivals].sort((a, b) => a - b);
    for (let i = 4; i < t.length; i++) {
      assert.ok(t[i] - t[i - 4] >= 1000,
        `requests ${i - 4} and ${i} reached the provider ${t[i] - t[i - 4]} ms apart: 5 in one second`);
    }
  }));

test('bad requests get a 4xx before any job: unknown model, no messages, wrong role, temperature, max_tokens, stream, unknown field',
  { timeout: 60000 }, () => withAi({}, async (s, p) => {
    const cases = [
      [{ ...chat('x'), model: 'nope' }, 404, 'NOT_FOUND', 'model'],
      [{ model: 'm1' }, 400, 'INVALID_REQUEST', 'messages'],
      [{ model: 'm1', messages: [] }, 400, 'INVALID_REQUEST', 'messages'],
      [{ model: 'm1', messages: [{ role: 'wizard', content: 'x' }] }, 400, 'INVALID_REQUEST', 'messages'],
      [{ model: 'm1', messages: [{ role: 'user', content: 5 }] }, 400, 'INVALID_REQUEST', 'messages'],
      [chat('x', { temperature: 2.5 }), 400, 'INVALID_REQUEST', 'temperature'],
      [chat('x', { temperature: 'hot' }), 400, 'INVALID_REQUEST', 'temperature'],
      [chat('x', { max_tokens: 101 }), 400, 'INVALID_REQUEST', 'max_tokens'],
      [chat('x', { max_tokens: 0 }), 400, 'INVALID_REQUEST', 'max_tokens'],
      [chat('x', { stream: true }), 400, 'INVALID_REQUEST', 'stream'],
      [chat('x', { n: 2 }), 400, 'INVALID_REQUEST', 'n'],
      [chat('x', { wat: 1 }), 400, 'INVALID_REQUEST', 'wat'],
      [chat('x', { stop: ['end', 1] }), 400, 'INVALID_REQUEST', 'stop'],
      [chat('x', { response_format: 'json' }), 400, 'INVALID_REQUEST', 'response_format'],
      [chat('x', { logit_bias: { 50256: 'never' } }), 400, 'INVALID_REQUEST', 'logit_bias'],
      [{ model: 'm1', messages: [{ role: 'user', content: 'x', name: 5 }] }, 400, 'INVALID_REQUEST', 'messages'],
      [{ model: 'm1', messages: [{ role: 'tool', content: 'x', tool_call_id: {} }] }, 400, 'INVALID_REQUEST', 'messages'],
      [{ model: 'm1', messages: [{ role: 'user', content: [{ type: 'image_url', text: 'x' }] }] }, 400, 'INVALID_REQUEST', 'messages'],
      [{ model: 'm1', messages: [{ role: 'user', content: [{ type: 'text', text: 'x', extra: 1 }] }] }, 400, 'INVALID_REQUEST', 'messages'],
      [{ model: 'm1', messages: [{ role: 'user', content: ['x'] }] }, 400, 'INVALID_REQUEST', 'messages'],
      [{ messages: chat('x').messages }, 400, 'INVALID_REQUEST', 'model'],
    ];
    for (const [body, status, code, field] of cases) {
      assertError(assert, await s.api('POST', '/v1/chat/completions', { body }), status, code, field);
    }
    const { items } = await s.listAll();
    assert.equal(items.length, 0, 'no job was created');
    assert.equal((await p.stats()).requests, 0, 'the provider was not called');
  }));

test('POST /v1/jobs of type ai.chat gets the checks of /v1/chat/completions: no disabled or unknown model, no request the model refuses; a good one runs',
  { timeout: 60000 }, () => withAi({
    models: (p) => ({ providers: [provider('p1', p.url)],
      models: [model('m1', ['p1']), model('m-off', ['p1'], { status: 'disabled' })] }),
  }, async (s, p) => {
    const job = (input) => ({ type: 'ai.chat', input });
    const req = (extra = {}) => ({ messages: [{ role: 'user', content: 'hi there' }], ...extra });
    const cases = [
      [{ model: 'm-off', request: req() }, 'input.model'],
      [{ model: 'nope', request: req() }, 'input.model'],
      [{ model: 'm1', request: req({ max_tokens: 100000000 }) }, 'input.request.max_tokens'],
      [{ model: 'm1', request: req({ stream: true }) }, 'input.request.stream'],
      [{ model: 'm1', request: req({ n: 50 }) }, 'input.request.n'],
      [{ model: 'm1', request: req({ tools: [{ x: 1 }] }) }, 'input.request.tools'],
      [{ model: 'm1', request: req({ async: true }) }, 'input.request.async'],
      [{ model: 'm1', request: { messages: [] } }, 'input.request.messages'],
      [{ model: 'm1', request: req({ stop: [1] }) }, 'input.request.stop'],
    ];
    for (const [input, field] of cases) {
      assertError(assert, await s.api('POST', '/v1/jobs', { body: job(input) }), 422,
        'VALIDATION_ERROR', field);
    }
    assert.equal((await s.listAll()).items.length, 0, 'no job was created');
    assert.equal((await p.stats()).requests, 0, 'the provider was not called');

    const models = await s.api('GET', '/v1/models');
    assert.equal(models.status, 200, models.text);
    assert.deepEqual(models.json.data.map((m) => m.id), ['m1'], 'a disabled model is not listed');

    const ok = await s.api('POST', '/v1/jobs', { body: job({ model: 'm1', request: req({ max_tokens: 20 }) }) });
    assert.equal(ok.status, 202, ok.text);
    const done = await s.waitStatus(ok.json.id, ['succeeded', 'failed', 'dead']);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.result.choices[0].message.content, 'Echo: hi there');

    // a job that names a disabled model some other way (the CLI, or disabled since):
    // the worker refuses it without calling the provider
    const cli = await s.cli(['enqueue', 'ai.chat', JSON.stringify({ model: 'm-off', request: req() })]);
    assert.equal(cli.code, 0, cli.stderr);
    const off = await s.waitStatus(cli.stdout.trim(), ['failed', 'dead', 'succeeded']);
    assert.equal(off.status, 'failed');
    assert.equal(off.error.code, 'MODEL_DISABLED');
    assert.equal(off.attempt, 1, 'not retried');
    assert.equal((await p.stats()).requests, 1, 'only the good job reached the provider');
  }));

test('a model published after the worker read its copy of the catalog: the worker reads it again rather than fail the job',
  { timeout: 60000 }, () => withAi({}, async (s, p) => {
    const first = await s.api('POST', '/v1/chat/completions', { body: chat('warm up') });
    assert.equal(first.status, 200, first.text); // the worker holds a copy (kept 2 s)
    const key = s.key('ai', 'catalog');
    const cat = JSON.parse(await s.redis('GET', key));
    cat.mx = { ...cat.m1, id: 'mx', name: 'MX' };
    await s.redis('SET', key, JSON.stringify(cat)); // as the api publishes a new model
    const r = await s.cli(['enqueue', 'ai.chat', JSON.stringify({ model: 'mx',
      request: { messages: [{ role: 'user', content: 'new model' }] } })]);
    assert.equal(r.code, 0, r.stderr);
    const done = await s.waitStatus(r.stdout.trim(), ['succeeded', 'failed', 'dead']);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.result.model, 'mx');
    assert.equal((await p.stats()).requests, 2);
  }));

test('a provider answering Retry-After of a day: the retry waits an hour at most',
  { timeout: 60000 }, () => withAi({}, async (s, p) => {
    await p.control({ failNext: 1, failStatus: 429, retryAfter: 86400 });
    const a = await s.api('POST', '/v1/chat/completions', { body: chat('later'),
      headers: { Prefer: 'respond-async' } });
    assert.equal(a.status, 202, a.text);
    const job = await s.waitStatus(a.json.id, ['scheduled'], { timeout: 20000 });
    const wait = Date.parse(job.runAt) - Date.now();
    assert.ok(wait > 3500000 && wait <= 3600000, `runAt ${job.runAt} is ${wait} ms ahead`);
    assert.equal(job.attempts[0].error.code, 'PROVIDER_UNAVAILABLE');
  }));

test('a database that never answers holds up one request thread, not the api: /v1/models answers 503 at once while jobs still go in',
  { timeout: 90000 }, () => withStack({ workers: 0, schedulers: 0 }, async (s) => {
    const held = [];
    const hole = net.createServer((sock) => { held.push(sock); }); // accepts, never answers
    await new Promise((resolve) => hole.listen(0, '127.0.0.1', resolve));
    try {
      const api = await s.startExtraApi({
        CONVEYOR_DATABASE_URL: `host=127.0.0.1 port=${hole.address().port} dbname=x user=x` });
      // more catalog reads at once than the api has request threads (32); one of them
      // waits on the database (connect timeout 5 s), the others answer 503
      const models = Promise.allSettled(Array.from({ length: 40 },
        () => api.api('GET', '/v1/models', { timeoutMs: 30000 })));
      await sleep(300);
      const post = await api.api('POST', '/v1/jobs',
        { body: { type: 'noop', input: {} }, timeoutMs: 10000 });
      assert.equal(post.status, 202, post.text);
      for (const r of await models) {
        assert.equal(r.status, 'fulfilled', String(r.reason));
        assertError(assert, r.value, 503, 'SERVICE_UNAVAILABLE');
      }
      assert.ok(held.length >= 1, 'the catalog read went to the database');
    } finally {
      for (const c of held) c.destroy();
      await new Promise((resolve) => hole.close(resolve));
    }
  }));

test('the official OpenAI client (npm openai@4) works unmodified: completion, models.list, errors',
  { timeout: 60000 }, () => withAi({}, async (s) => {
    const OpenAI = require('openai');
    const client = new OpenAI({ apiKey: s.token, baseURL: `http://127.0.0.1:${s.port}/v1`,
      maxRetries: 0, timeout: 20000 });
    const req = chat('hello from the sdk', { max_tokens: 20 });
    const want = expectedUsage(req);
    const c = await client.chat.completions.create(req);
    assert.equal(c.object, 'chat.completion');
    assert.equal(c.model, 'm1');
    assert.equal(c.choices[0].message.content, want.content);
    assert.equal(c.usage.prompt_tokens, want.prompt);
    assert.equal(c.usage.completion_tokens, want.completion);
    const models = await client.models.list();
    assert.ok(models.data.some((m) => m.id === 'm1'), JSON.stringify(models.data));
    await assert.rejects(client.chat.completions.create({ ...req, model: 'nope' }),
      (e) => e.status === 404 && /nope/.test(e.message));
    await assert.rejects(client.chat.completions.create({ ...req, temperature: 9 }),
      (e) => e.status === 400 && /temperature/.test(e.message));
    const bad = new OpenAI({ apiKey: 'not-a-key', baseURL: `http://127.0.0.1:${s.port}/v1`, maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create(req), (e) => e.status === 401);
  }));
