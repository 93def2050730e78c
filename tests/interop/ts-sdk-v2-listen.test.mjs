// TS SDK v2 client (@modelcontextprotocol/client 2.4.0) pinned to 2026-07-28,
// through the bridge in front of the example legacy SSE server (examples/,
// which advertises resources.subscribe): Client.listen() with
// resourceSubscriptions gets them honoured, receives
// notifications/resources/updated for its URI (the server changes it: its
// `touch` tool, called by the same client) and not for another, and the list
// change a call makes the server announce; closing the subscription leaves
// the client working.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { startBridge, spawnUntil, stop, waitFor } from './helpers.mjs';

const exampleBin = process.env.EXAMPLE_BIN ?? '../../build/examples/example-legacy-server';
let upstream, bridge, client;

before(async () => {
  const s = await spawnUntil(exampleBin, ['--listen', '127.0.0.1:0'],
    /SSE endpoint (http:\/\/127\.0\.0\.1:\d+\/sse)/);
  upstream = s.child;
  bridge = await startBridge(s.match[1]);
  client = new Client({ name: 'interop-v2-listen', version: '2.0.0' },
    { versionNegotiation: { mode: { pin: '2026-07-28' } } });
  await client.connect(new StreamableHTTPClientTransport(new URL(bridge.url)), { timeout: 10000 });
});

after(async () => {
  await client?.close().catch(() => {});
  await stop(bridge?.child);
  await stop(upstream);
});

test('listen(): resourceSubscriptions honoured; updates for that URI only; list changes too', async () => {
  assert.equal(client.getDiscoverResult()?.capabilities?.resources?.subscribe, true,
    'server/discover advertises resources.subscribe');
  const updates = [];
  const changes = [];
  client.setNotificationHandler('notifications/resources/updated', (n) => { updates.push(n.params); });
  client.setNotificationHandler('notifications/tools/list_changed', (n) => { changes.push(n); });
  const sub = await client.listen({ toolsListChanged: true, resourceSubscriptions: ['example://a'] },
    { timeout: 10000 });
  assert.deepEqual(sub.honoredFilter, { toolsListChanged: true, resourceSubscriptions: ['example://a'] });

  // The held upstream session subscribes asynchronously: touch until the
  // server reports a subscribed session (bounded).
  let touched = '0';
  for (let i = 0; i < 50 && touched === '0'; ++i) {
    const r = await client.callTool({ name: 'touch', arguments: { uri: 'example://a' } }, { timeout: 10000 });
    touched = r.content[0].text;
    if (touched === '0') await new Promise((res) => setTimeout(res, 50));
  }
  assert.equal(touched, '1', 'one upstream session (the bridge\'s) is subscribed to example://a');
  assert.ok(await waitFor(() => updates.some((p) => p.uri === 'example://a'), 2000), JSON.stringify(updates));
  const u = updates.find((p) => p.uri === 'example://a');
  assert.ok(typeof u._meta?.['io.modelcontextprotocol/subscriptionId'] === 'string', JSON.stringify(u));

  const r = await client.callTool({ name: 'touch', arguments: { uri: 'example://b' } }, { timeout: 10000 });
  assert.equal(r.content[0].text, '0', 'nobody subscribed example://b');

  // A call that makes the server announce a tools change on its own session.
  await client.callTool({ name: 'list_changed', arguments: { kind: 'tools' } }, { timeout: 10000 });
  assert.ok(await waitFor(() => changes.length > 0, 2000), 'tools/list_changed through the listen stream');
  assert.ok(!updates.some((p) => p.uri === 'example://b'), JSON.stringify(updates));

  await sub.close();
  const after = await client.callTool({ name: 'echo', arguments: { text: 'still here' } }, { timeout: 10000 });
  assert.equal(after.content[0].text, 'still here');
});
