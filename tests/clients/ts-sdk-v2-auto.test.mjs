// TS SDK v2 client (@modelcontextprotocol/client) with versionNegotiation
// {mode: 'auto'}: it first POSTs a 2026-07-28 `server/discover` probe; the
// bridge serves that era (#15), so the client stays on 2026-07-28: no
// `initialize`, no session.
// client -> bridge -> legacy TS SDK SSE server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { startBridge, startUpstream, recordingFetch } from './lib.mjs';

let upstream, bridge, client;
let connected = false;
const wire = [];

before(async () => {
  upstream = await startUpstream();
  bridge = await startBridge(upstream.sseUrl);
});

after(async () => {
  await client?.close().catch(() => {});
  await bridge?.stop();
  await upstream?.stop();
});

test('auto mode: connect (discover probe answered: 2026-07-28), list, call', async () => {
  client = new Client({ name: 'clients-v2-auto', version: '1.0.0' },
    { versionNegotiation: { mode: 'auto', probe: { timeoutMs: 5000 } } });
  try {
    await client.connect(new StreamableHTTPClientTransport(new URL(bridge.url), { fetch: recordingFetch(wire) }),
      { timeout: 10000 });
  } finally {
    console.log(`# connect: ${JSON.stringify(wire)}`);
  }
  connected = true;
  // The probe went first and was answered with the upstream's server info:
  // the client adopts the stateless era and never sends initialize.
  const [probe] = wire;
  assert.equal(probe.rpc, 'server/discover');
  assert.equal(probe.status, 200, JSON.stringify(probe));
  assert.ok(!wire.some((w) => w.rpc === 'initialize'), JSON.stringify(wire));
  assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
  const { tools } = await client.listTools(undefined, { timeout: 10000 });
  for (const name of ['add', 'slow', 'progress']) assert.ok(tools.some((t) => t.name === name), name);
  const r = await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } }, { timeout: 10000 });
  assert.equal(r.content[0].text, '5');
});

test('auto mode: a call with progress notifications', async () => {
  assert.ok(connected, 'the client connected');
  const seen = [];
  const r = await client.callTool({ name: 'progress', arguments: { steps: 3, ms: 50 } },
    { timeout: 10000, onprogress: (p) => seen.push(p) });
  assert.equal(r.content[0].text, 'done 3');
  assert.deepEqual(seen.map((p) => p.progress), [1, 2, 3]);
  assert.equal(seen[2].total, 3);
  assert.equal(seen[2].message, 'step 3');
});

test('auto mode: upstream killed mid-call rejects within 1 s; next call works', async () => {
  assert.ok(connected, 'the client connected');
  const pending = client.callTool({ name: 'slow', arguments: { ms: 20000 } }, { timeout: 25000 })
    .then(() => null, (e) => e);
  await upstream.waitRunning();
  const t0 = performance.now();
  await upstream.kill();
  const err = await pending;
  const ms = performance.now() - t0;
  console.log(`# upstream killed -> call rejected in ${ms.toFixed(0)} ms: ${err?.message}`);
  assert.ok(err instanceof Error, 'the call should have failed');
  assert.ok(ms < 1000, `rejected after ${ms} ms`);
  assert.match(String(err.message), /upstream/);

  await upstream.restart();
  const r = await client.callTool({ name: 'add', arguments: { a: 40, b: 2 } }, { timeout: 10000 });
  assert.equal(r.content[0].text, '42');
  assert.equal(client.transport?.sessionId, undefined, 'no session in the stateless era');
});
