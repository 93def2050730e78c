// TS SDK v2 client (@modelcontextprotocol/client 2.4.0) speaking the
// stateless era (2026-07-28) to the bridge, in front of the TS SDK v1 legacy
// SSE server: pinned (`versionNegotiation: {mode: {pin: '2026-07-28'}}`: the
// connect-time server/discover must offer it, no fallback) and `auto` (the
// probe's answer is modern evidence, so the client stays on 2026-07-28).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { startBridge, startTsLegacyServer, stop, assertDropFailsPendingCall } from './helpers.mjs';

let upstream, bridge;
const clients = [];

// A fetch that records each POST's JSON-RPC method, status and headers.
function recordingFetch(wire) {
  return async (url, init) => {
    const res = await fetch(url, init);
    let rpc;
    try { rpc = JSON.parse(init?.body ?? 'null')?.method; } catch { rpc = undefined; }
    wire.push({ rpc, status: res.status, version: new Headers(init?.headers).get('mcp-protocol-version'),
                session: new Headers(init?.headers).get('mcp-session-id') });
    return res;
  };
}

before(async () => {
  upstream = await startTsLegacyServer();
  bridge = await startBridge(upstream.sseUrl, ['--request-timeout', '20s']);
});

after(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await stop(bridge?.child);
  await stop(upstream?.child);
});

async function connect(mode, wire) {
  const client = new Client({ name: 'interop-v2-stateless', version: '2.0.0' },
    { versionNegotiation: { mode, probe: { timeoutMs: 5000 } } });
  clients.push(client);
  await client.connect(new StreamableHTTPClientTransport(new URL(bridge.url), { fetch: recordingFetch(wire) }),
    { timeout: 10000 });
  return client;
}

test('pinned 2026-07-28: discover, list tools, call one; no initialize, no session', async () => {
  const wire = [];
  const client = await connect({ pin: '2026-07-28' }, wire);
  assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
  const discover = client.getDiscoverResult();
  assert.ok(discover?.supportedVersions.includes('2026-07-28'), JSON.stringify(discover));
  const { tools } = await client.listTools(undefined, { timeout: 10000 });
  for (const name of ['add', 'echo', 'slow']) assert.ok(tools.some((t) => t.name === name), name);
  const r = await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } }, { timeout: 10000 });
  assert.equal(r.content[0].text, '5');
  console.log(`# wire: ${JSON.stringify(wire)}`);
  assert.ok(!wire.some((w) => w.rpc === 'initialize'), 'no initialize in the stateless era');
  assert.ok(wire.every((w) => !w.session), 'no Mcp-Session-Id');
  assert.ok(wire.every((w) => w.version === '2026-07-28'), 'every POST says 2026-07-28');
});

test('auto: the discover probe is answered, so the client ends on 2026-07-28', async () => {
  const wire = [];
  const client = await connect('auto', wire);
  assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
  assert.equal(wire[0].rpc, 'server/discover');
  assert.equal(wire[0].status, 200);
  assert.ok(!wire.some((w) => w.rpc === 'initialize'), JSON.stringify(wire));
  const r = await client.callTool({ name: 'echo', arguments: { text: 'auto' } }, { timeout: 10000 });
  assert.equal(r.content[0].text, 'auto');
});

test('pinned: a transport failure mid-call rejects the pending call at once', async () => {
  const client = await connect({ pin: '2026-07-28' }, []);
  await assertDropFailsPendingCall(assert, client, upstream, { slow: { timeout: 25000 }, add: { timeout: 10000 } });
});

// MRTR (#15 item 4): the legacy server asks mid-call (sampling/createMessage,
// roots/list); a 2026-07-28 client has no server-to-client requests, so the
// bridge answers input_required and the SDK's own MRTR driver answers with
// its registered handlers and retries; the call completes.
test('pinned 2026-07-28: a legacy server\'s mid-call sampling and roots reach the client as MRTR', async () => {
  const wire = [];
  const client = new Client({ name: 'interop-v2-mrtr', version: '2.0.0' },
    { capabilities: { sampling: {}, roots: {} },
      versionNegotiation: { mode: { pin: '2026-07-28' }, probe: { timeoutMs: 5000 } } });
  clients.push(client);
  let sampled = 0;
  client.setRequestHandler('sampling/createMessage', async (req) => {
    sampled++;
    return { model: 'mrtr-model', role: 'assistant',
             content: { type: 'text', text: `echo ${req.params.messages[0].content.text}` } };
  });
  client.setRequestHandler('roots/list', async () => ({ roots: [{ uri: 'file:///mrtr', name: 'mrtr' }] }));
  await client.connect(new StreamableHTTPClientTransport(new URL(bridge.url), { fetch: recordingFetch(wire) }),
    { timeout: 10000 });
  assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
  const r = await client.callTool({ name: 'sample', arguments: { prompt: 'hi' } }, { timeout: 15000 });
  assert.equal(r.content[0].text, 'model mrtr-model said: echo hi');
  assert.equal(sampled, 1);
  const roots = await client.callTool({ name: 'roots', arguments: {} }, { timeout: 15000 });
  assert.equal(roots.content[0].text, 'file:///mrtr');
  const calls = wire.filter((w) => w.rpc === 'tools/call');
  console.log(`# tools/call POSTs: ${calls.length} (first rounds + retries)`);
  assert.equal(calls.length, 4, 'each call: one input_required round, then the retry that completes it');
});
