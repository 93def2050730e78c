// TS SDK v1 client -> bridge -> @modelcontextprotocol/server-everything in
// its legacy SSE mode (the reference server, written by nobody here).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ListRootsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { startBridge, startEverythingSse, stop } from './helpers.mjs';

let upstream, bridge, client;

before(async () => {
  upstream = await startEverythingSse();
  bridge = await startBridge(upstream.sseUrl, ['--request-timeout', '20s']);
  client = new Client({ name: 'interop-everything', version: '1.0.0' },
    { capabilities: { sampling: {}, roots: {} } });
  client.setRequestHandler(CreateMessageRequestSchema, async () => (
    { model: 'stub-model', role: 'assistant', content: { type: 'text', text: 'stubbed answer' } }));
  client.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: [{ uri: 'file:///r1', name: 'r1' }] }));
  await client.connect(new StreamableHTTPClientTransport(new URL(bridge.url)));
});

after(async () => {
  await client?.close().catch(() => {});
  await stop(bridge?.child);
  await stop(upstream?.child);
});

test('initialize and list tools, including the capability-conditional ones', async () => {
  assert.match(client.getServerVersion().name, /everything/);
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name);
  for (const n of ['echo', 'get-sum', 'trigger-long-running-operation', 'trigger-sampling-request',
                   'get-roots-list']) {
    assert.ok(names.includes(n), `missing ${n} in ${names}`);
  }
});

test('echo and get-sum', async () => {
  const e = await client.callTool({ name: 'echo', arguments: { message: 'through the bridge' } });
  assert.match(e.content[0].text, /through the bridge/);
  const s = await client.callTool({ name: 'get-sum', arguments: { a: 40, b: 2 } });
  assert.match(s.content[0].text, /42/);
});

test('long-running operation streams progress', async () => {
  const seen = [];
  const r = await client.callTool({ name: 'trigger-long-running-operation',
    arguments: { duration: 1, steps: 4 } }, undefined, { onprogress: (p) => seen.push(p.progress) });
  assert.deepEqual(seen, [1, 2, 3, 4]);
  assert.match(JSON.stringify(r.content), /completed/i);
});

test('sampling request from the reference server reaches the client handler', async () => {
  const r = await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt: 'hi', maxTokens: 10 } });
  assert.match(r.content[0].text, /stubbed answer/);
});

test('roots list from the reference server', async () => {
  const r = await client.callTool({ name: 'get-roots-list', arguments: {} });
  assert.match(JSON.stringify(r.content), /file:\/\/\/r1/);
});

test('resources and prompts', async () => {
  const { resources } = await client.listResources();
  assert.ok(resources.length > 0);
  const read = await client.readResource({ uri: resources[0].uri });
  assert.ok(read.contents.length > 0);
  const { prompts } = await client.listPrompts();
  assert.ok(prompts.length > 0);
  const simple = prompts.find((p) => !p.arguments || p.arguments.every((a) => !a.required));
  const got = await client.getPrompt({ name: simple.name, arguments: {} });
  assert.ok(got.messages.length > 0);
});
