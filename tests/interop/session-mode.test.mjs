// Session mode (#13) with real peers: @modelcontextprotocol/server-everything
// in its legacy SSE mode behind `--upstream-mode session`, through the TS SDK
// v1 client and the v2 client (@modelcontextprotocol/client). Messages outside
// calls (resources/list_changed, resource updates, log messages) reach the
// client's GET stream; after an upstream restart the session re-opens by
// itself, the client is warned, and its subscription is replayed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  LoggingMessageNotificationSchema, ResourceListChangedNotificationSchema, ResourceUpdatedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from '@modelcontextprotocol/client';
import { startBridge, startEverythingSse, stop, waitFor } from './helpers.mjs';

const children = [];
after(async () => { for (const c of children.reverse()) await stop(c); });

const DATA = 'data:text/plain;base64,' + Buffer.from('hello from the interop test').toString('base64');
const WATCHED = 'demo://resource/dynamic/text/1';

async function setup(version) {
  const upstream = await startEverythingSse();
  children.push(upstream.child);
  const bridge = await startBridge(upstream.sseUrl, ['--upstream-mode', 'session', '--request-timeout', '20s']);
  children.push(bridge.child);
  const got = { logs: [], updated: [], listChanged: 0 };
  let client;
  if (version === 1) {
    client = new ClientV1({ name: 'interop-session-v1', version: '1.0.0' });
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => { got.logs.push(n.params); });
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => { got.updated.push(n.params.uri); });
    client.setNotificationHandler(ResourceListChangedNotificationSchema, () => { got.listChanged++; });
    await client.connect(new TransportV1(new URL(bridge.url)));
  } else {
    client = new ClientV2({ name: 'interop-session-v2', version: '2.0.0' });
    client.setNotificationHandler('notifications/message', (n) => { got.logs.push(n.params); });
    client.setNotificationHandler('notifications/resources/updated', (n) => { got.updated.push(n.params.uri); });
    client.setNotificationHandler('notifications/resources/list_changed', () => { got.listChanged++; });
    await client.connect(new TransportV2(new URL(bridge.url)));
  }
  return { upstream, bridge, client, got };
}

for (const version of [1, 2]) {
  test(`TS SDK v${version}: list_changed, log messages and resource updates through session mode`, { timeout: 60000 }, async () => {
    const { upstream, bridge, client, got } = await setup(version);
    try {
      // The upstream's resources.subscribe is passed on in session mode.
      assert.equal(client.getServerCapabilities().resources.subscribe, true);
      await client.setLoggingLevel('debug');
      // A resource registered during a call: notifications/resources/list_changed
      // belongs to no call and goes to the GET stream.
      const gz = await client.callTool({ name: 'gzip-file-as-resource', arguments: { name: 'x.gz', data: DATA } });
      assert.ok(!gz.isError, JSON.stringify(gz));
      assert.ok(await waitFor(() => got.listChanged > 0, 3000), 'resources/list_changed not received');
      // Subscribe, then start the server's updates (one at once, then every 5 s).
      await client.subscribeResource({ uri: WATCHED });
      await client.callTool({ name: 'toggle-subscriber-updates', arguments: {} });
      assert.ok(await waitFor(() => got.updated.includes(WATCHED), 3000), 'no resources/updated');
      // Log messages outside any call (every 5 s, random level; debug lets all through).
      await client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
      const before = got.logs.length;
      assert.ok(await waitFor(() => got.logs.length > before, 7000), 'no log message outside a call');
      // Unsubscribed: the next periodic update (5 s) does not come.
      await client.unsubscribeResource({ uri: WATCHED });
      const n = got.updated.length;
      await new Promise((r) => setTimeout(r, 5600));
      assert.equal(got.updated.length, n, 'updates after unsubscribe');
      if (version !== 1) return;
      // Recovery (v1): the upstream restarts on the same port. The session
      // re-opens by itself (the client holds a GET stream), the client is
      // warned that server-side state was lost, and a new subscription made
      // before the restart is replayed.
      await client.subscribeResource({ uri: WATCHED });
      await stop(upstream.child);
      const again = await startEverythingSse(upstream.port);
      children.push(again.child);
      assert.ok(await waitFor(() => got.logs.some((l) => l.logger === 'mcp-sse-bridge' && l.level === 'warning'), 8000),
        'no state-lost warning');
      const u = got.updated.length;
      // The new upstream session knows the subscription: its update arrives.
      await client.callTool({ name: 'toggle-subscriber-updates', arguments: {} });
      assert.ok(await waitFor(() => got.updated.length > u, 3000), 'subscription not replayed');
      assert.match(bridge.output(), /upstream session re-opened/);
    } finally {
      await client.close().catch(() => {});
    }
  });
}
