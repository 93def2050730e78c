// MCP fidelity through the bridge with real peers: TS SDK v1 client ->
// bridge -> TS SDK legacy SSEServerTransport server. Progress, logging with a
// replayed setLevel, sampling and roots (server-to-client requests, also
// concurrent ones whose upstream ids collide), cancellation, errors and large
// results.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ListRootsRequestSchema, LoggingMessageNotificationSchema }
  from '@modelcontextprotocol/sdk/types.js';
import { startBridge, startTsLegacyServer, stop, waitFor } from './helpers.mjs';

let upstream, bridge, client;
const logs = [];

before(async () => {
  upstream = await startTsLegacyServer();
  bridge = await startBridge(upstream.sseUrl, ['--request-timeout', '20s']);
  client = new Client({ name: 'interop-fidelity', version: '1.0.0' },
    { capabilities: { sampling: {}, roots: { listChanged: true } } });
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    const text = req.params.messages[0].content.text;
    return { model: 'test-model', role: 'assistant', content: { type: 'text', text: `echo(${text})` } };
  });
  client.setRequestHandler(ListRootsRequestSchema, async () => ({
    roots: [{ uri: 'file:///work/a', name: 'a' }, { uri: 'file:///work/b', name: 'b' }] }));
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => { logs.push(n.params); });
  await client.connect(new StreamableHTTPClientTransport(new URL(bridge.url)));
});

after(async () => {
  await client?.close().catch(() => {});
  await stop(bridge?.child);
  await stop(upstream?.child);
});

test('progress notifications reach the caller with its token, in order', async () => {
  const seen = [];
  const r = await client.callTool({ name: 'progress', arguments: { steps: 4, ms: 20 } }, undefined,
    { onprogress: (p) => seen.push(p), timeout: 10000 });
  assert.equal(r.content[0].text, 'done 4');
  assert.deepEqual(seen.map((p) => p.progress), [1, 2, 3, 4]);
  assert.equal(seen[3].message, 'step 4');
});

test('logging honours the setLevel replayed on every upstream session', async () => {
  await client.setLoggingLevel('warning');
  logs.length = 0;
  const r = await client.callTool({ name: 'log', arguments: { text: 'hi' } });
  assert.equal(r.content[0].text, 'logged');
  assert.deepEqual(logs.map((l) => l.level), ['warning', 'error']);
  assert.equal(logs[1].data, 'error: hi');
});

test('sampling: the client handler answers a server request during a call', async () => {
  const r = await client.callTool({ name: 'sample', arguments: { prompt: 'ping?' } });
  assert.equal(r.content[0].text, 'model test-model said: echo(ping?)');
});

test('roots/list: the client answers during a call', async () => {
  const r = await client.callTool({ name: 'roots', arguments: {} });
  assert.equal(r.content[0].text, 'file:///work/a,file:///work/b');
});

test('concurrent server requests (same upstream ids) are routed to the right calls', async () => {
  const prompts = ['one', 'two', 'three', 'four'];
  const results = await Promise.all(prompts.map((p, i) =>
    client.callTool({ name: 'sample', arguments: { prompt: p, delay: 50 * (prompts.length - i) } })));
  assert.deepEqual(results.map((r) => r.content[0].text),
    prompts.map((p) => `model test-model said: echo(${p})`));
});

test('cancellation: aborting a call cancels the upstream work', async () => {
  const before = (await upstream.stats()).cancelled;
  const ac = new AbortController();
  const pending = client.callTool({ name: 'slow', arguments: { ms: 10000 } }, undefined, { signal: ac.signal });
  pending.catch(() => {});
  await new Promise((r) => setTimeout(r, 300));
  ac.abort('user pressed stop');
  await assert.rejects(pending);
  assert.ok(await waitFor(async () => (await upstream.stats()).cancelled > before, 2000),
    'upstream never saw notifications/cancelled');
  const r = await client.callTool({ name: 'echo', arguments: { text: 'after cancel' } });
  assert.equal(r.content[0].text, 'after cancel');
});

test('errors from the upstream pass through unchanged', async () => {
  const r = await client.callTool({ name: 'fail', arguments: { why: 'because' } });
  assert.equal(r.isError, true);
  assert.equal(r.content[0].text, 'failed: because');
  // Invalid arguments: the SDK server's own error, not the bridge's.
  const bad = await client.callTool({ name: 'add', arguments: { a: 'x', b: 1 } }).catch((e) => e);
  if (bad instanceof Error) {
    assert.equal(bad.data?.bridge, undefined);
  } else {
    assert.equal(bad.isError, true);
  }
  await assert.rejects(client.request({ method: 'no/such/method', params: {} },
    (await import('zod')).z.any()), (e) => e.code === -32601 && e.data?.bridge === undefined);
});

test('resources/subscribe gets a clear error instead of a false success', async () => {
  await assert.rejects(client.request({ method: 'resources/subscribe', params: { uri: 'x://y' } },
    (await import('zod')).z.any()), (e) => e.code === -32601 && /standalone/.test(e.message));
});

test('large results (8 MiB) arrive intact', async () => {
  const n = 8 * 1024 * 1024;
  const r = await client.callTool({ name: 'big', arguments: { bytes: n } }, undefined, { timeout: 30000 });
  assert.equal(r.content[0].text.length, n);
  assert.ok(/^y+$/.test(r.content[0].text.slice(0, 1000)));
});
