// TS SDK v2 client (@modelcontextprotocol/client, default legacy version
// negotiation = initialize) -> bridge -> TS SDK v1 legacy SSE server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { startBridge, startTsLegacyServer, stop, assertDropFailsPendingCall } from './helpers.mjs';

let upstream, bridge, client;

before(async () => {
  upstream = await startTsLegacyServer();
  bridge = await startBridge(upstream.sseUrl, ['--request-timeout', '20s']);
  client = new Client({ name: 'interop-v2', version: '2.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(bridge.url)));
});

after(async () => {
  await client?.close().catch(() => {});
  await stop(bridge?.child);
  await stop(upstream?.child);
});

test('v2 client: initialize, list, call', async () => {
  assert.equal(client.getServerVersion().name, 'ts-legacy-server');
  const { tools } = await client.listTools();
  assert.ok(tools.some((t) => t.name === 'add'));
  const r = await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } });
  assert.equal(r.content[0].text, '5');
  const e = await client.callTool({ name: 'echo', arguments: { text: 'v2' } });
  assert.equal(e.content[0].text, 'v2');
});

test('v2 client: a transport failure arrives as an error for the pending call', async () => {
  await assertDropFailsPendingCall(assert, client, upstream);
});
