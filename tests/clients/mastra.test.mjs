// @mastra/mcp 2.x MCPClient (default: probes `server/discover`, falls back to
// `initialize` for a server that has not upgraded; the bridge serves the
// 2026-07-28 era (#15), so it stays there: no initialize, no session). Tools are called the way a
// Mastra agent calls them: through the Mastra tool's execute().
// MCPClient -> bridge -> legacy TS SDK SSE server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { MCPClient } from '@mastra/mcp';
import { startBridge, startUpstream, recordingFetch } from './lib.mjs';

let upstream, bridge, mcp, tools;
const wire = [];  // every HTTP exchange the client made: method, JSON-RPC method, session, status

before(async () => {
  upstream = await startUpstream();
  bridge = await startBridge(upstream.sseUrl);
});

after(async () => {
  await mcp?.disconnect().catch(() => {});
  await bridge?.stop();
  await upstream?.stop();
});

test('mastra: connect, list tools', async () => {
  mcp = new MCPClient({
    id: 'clients-mastra',
    timeout: 25000,
    servers: { bridge: { url: new URL(bridge.url), fetch: recordingFetch(wire), enableServerLogs: false,
                        enableProgressTracking: true } },
  });
  const { toolsets: found, errors } = await mcp.listToolsetsWithErrors({ perServerTimeoutMs: 15000 });
  assert.deepEqual(errors, {}, `discovery failed; wire: ${JSON.stringify(wire)}`);
  tools = found.bridge;
  for (const name of ['add', 'slow', 'progress']) assert.ok(tools?.[name] ?? tools?.[`bridge_${name}`], name);
  tools = Object.fromEntries(Object.entries(tools).map(([k, v]) => [k.replace(/^bridge_/, ''), v]));
  // The default mode probed first; the probe was answered, so no initialize.
  console.log(`# connect: ${JSON.stringify(wire.slice(0, 3))}`);
  assert.equal(wire[0].rpc, 'server/discover', JSON.stringify(wire));
  assert.equal(wire[0].status, 200, JSON.stringify(wire));
  assert.ok(!wire.some((w) => w.rpc === 'initialize'), JSON.stringify(wire));
  assert.ok(wire.every((w) => w.version === '2026-07-28' && !w.session), JSON.stringify(wire));
});

test('mastra: a call', async () => {
  assert.ok(tools, 'connected');
  const r = await tools.add.execute({ a: 2, b: 3 }, {});
  assert.equal(r.content?.[0]?.text, '5', JSON.stringify(r));
});

test('mastra: a call with progress (progress.onUpdate)', async () => {
  assert.ok(tools, 'connected');
  const seen = [];
  await mcp.progress.onUpdate('bridge', (p) => seen.push(p));
  const r = await tools.progress.execute({ steps: 3, ms: 50 }, { runId: 'mastra-run-1' });
  assert.equal(r.content?.[0]?.text, 'done 3', JSON.stringify(r));
  assert.deepEqual(seen.map((p) => p.progress), [1, 2, 3]);
  assert.equal(seen[0].progressToken, 'mastra-run-1');
});

test('mastra: upstream killed mid-call rejects within 1 s; next call works, no re-initialize', async () => {
  assert.ok(tools, 'connected');
  const pending = tools.slow.execute({ ms: 20000 }, {}).then((r) => ({ result: r }), (e) => ({ error: e }));
  await upstream.waitRunning();
  const t0 = performance.now();
  await upstream.kill();
  const out = await pending;
  const ms = performance.now() - t0;
  const text = out.error ? String(out.error.message ?? out.error) : JSON.stringify(out.result);
  console.log(`# upstream killed -> execute() settled in ${ms.toFixed(0)} ms: ${text}`);
  // A Mastra tool either throws or returns an error object; either way no result text.
  const failed = out.error !== undefined || out.result?.isError === true || out.result?.error !== undefined;
  assert.ok(failed, `expected a failure, got ${text}`);
  assert.ok(ms < 1000, `settled after ${ms} ms`);
  assert.match(text, /upstream/);

  await upstream.restart();
  const r = await tools.add.execute({ a: 40, b: 2 }, {});
  assert.equal(r.content?.[0]?.text, '42', JSON.stringify(r));
  assert.ok(!wire.slice(wire.findIndex((w) => w.rpc === 'tools/call')).some((w) => w.rpc === 'initialize'),
    `no re-initialize: ${JSON.stringify(wire)}`);
});
