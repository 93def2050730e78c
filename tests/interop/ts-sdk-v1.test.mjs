// TS SDK v1 StreamableHTTPClientTransport -> mcp-sse-bridge -> TS SDK legacy
// SSEServerTransport server. The done-when of issue #2.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startBridge, startTsLegacyServer, stop, waitFor } from './helpers.mjs';

const REQUEST_TIMEOUT_MS = 3000;
let upstream, bridge, client;

before(async () => {
  upstream = await startTsLegacyServer();
  bridge = await startBridge(upstream.sseUrl, ['--request-timeout', `${REQUEST_TIMEOUT_MS}ms`,
    '--ping-interval', '10s']);
  client = new Client({ name: 'interop-v1', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(bridge.url)));
});

after(async () => {
  await client?.close().catch(() => {});
  await stop(bridge?.child);
  await stop(upstream?.child);
});

test('initialize, list and call tools through the bridge', async () => {
  assert.equal(client.getServerVersion().name, 'ts-legacy-server');
  const { tools } = await client.listTools();
  for (const n of ['add', 'echo', 'slow', 'sample', 'roots']) assert.ok(tools.some((t) => t.name === n), n);
  const r = await client.callTool({ name: 'add', arguments: { a: 20, b: 22 } });
  assert.equal(r.content[0].text, '42');
  const e = await client.callTool({ name: 'echo', arguments: { text: 'héllo' } });
  assert.equal(e.content[0].text, 'héllo');
});

test('upstream SSE stream killed during a call: the call rejects within 1 s', async () => {
  const t0 = performance.now();
  let rejectedAt = 0;
  const pending = client.callTool({ name: 'slow', arguments: { ms: 20000 } }, undefined, { timeout: 30000 })
    .finally(() => { rejectedAt = performance.now(); });
  pending.catch(() => {});  // observed below; keep node from flagging it as unhandled meanwhile
  assert.ok(await waitFor(async () => (await upstream.stats()).running > 0, 10000),
    'the slow call never started upstream');
  const killedAt = performance.now();
  assert.ok(Number(await upstream.control('/control/kill-streams')) >= 1);
  await assert.rejects(pending, (err) => {
    const ms = rejectedAt - killedAt;
    console.log(`# stream kill -> client error: ${ms.toFixed(0)} ms (call age ${(performance.now() - t0).toFixed(0)} ms)`);
    assert.ok(ms < 1000, `rejected after ${ms} ms`);
    assert.equal(err.code, -32000);
    assert.equal(err.data?.bridge?.kind, 'upstream_closed');
    return true;
  });
});

test('next call succeeds without reconnecting the client', async () => {
  const r = await client.callTool({ name: 'echo', arguments: { text: 'still here' } });
  assert.equal(r.content[0].text, 'still here');
});

test('black-holed call rejects at --request-timeout (+-0.5 s)', async () => {
  await upstream.control('/control/blackhole?on=1');
  const t0 = performance.now();
  await assert.rejects(
    client.callTool({ name: 'echo', arguments: { text: 'void' } }, undefined, { timeout: 30000 }),
    (err) => {
      const ms = performance.now() - t0;
      console.log(`# black hole -> client error: ${ms.toFixed(0)} ms (request-timeout ${REQUEST_TIMEOUT_MS} ms)`);
      assert.ok(Math.abs(ms - REQUEST_TIMEOUT_MS) <= 500, `rejected after ${ms} ms`);
      assert.equal(err.code, -32001);
      assert.equal(err.data?.bridge?.kind, 'deadline_exceeded');
      return true;
    });
  await upstream.control('/control/blackhole?on=0');
  const r = await client.callTool({ name: 'add', arguments: { a: 1, b: 1 } });
  assert.equal(r.content[0].text, '2');
});
