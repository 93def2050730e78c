// mcp-remote (the stdio <-> remote proxy many desktop hosts launch) driven over
// stdio with JSON-RPC lines, the way a host drives it. One proxy process = one
// client session: every step below runs on the same process and the same
// Streamable HTTP session behind it.
// host (this test) -stdio-> mcp-remote -Streamable HTTP-> bridge -> legacy server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { node22, mcpRemoteProxy, startBridge, startUpstream, scratchDir, isolatedEnv, stop } from './lib.mjs';
import { stdioPeer } from './stdio-rpc.mjs';

let upstream, bridge;
const scratch = [];

before(async () => {
  upstream = await startUpstream();
  bridge = await startBridge(upstream.sseUrl);
});

after(async () => {
  await bridge?.stop();
  await upstream?.stop();
  for (const s of scratch) s.remove();
});

async function scenario(t, mode) {
  const home = scratchDir('mcp-remote-');
  scratch.push(home);
  const args = [mcpRemoteProxy, bridge.url, '--transport', 'http-only', '--allow-http',
    '--connect-timeout', '5', ...(mode === 'auto' ? ['--protocol', 'auto'] : [])];
  const peer = stdioPeer(node22, args, { env: isolatedEnv(home.dir) });
  t.after(() => stop(peer.child));

  // connect
  const init = await peer.request('initialize', {
    protocolVersion: '2025-11-25', capabilities: {},
    clientInfo: { name: 'clients-mcp-remote-host', version: '1.0.0' } }, 20000);
  assert.ok(init.result, `initialize failed: ${JSON.stringify(init)}\nstderr:\n${peer.stderr}`);
  assert.equal(init.result.serverInfo.name, 'ts-legacy-server');
  peer.notify('notifications/initialized', {});

  // list
  const list = await peer.request('tools/list', {});
  assert.ok(list.result, JSON.stringify(list));
  for (const name of ['add', 'slow', 'progress']) assert.ok(list.result.tools.some((x) => x.name === name), name);

  // a call
  const add = await peer.request('tools/call', { name: 'add', arguments: { a: 2, b: 3 } });
  assert.equal(add.result?.content?.[0]?.text, '5', JSON.stringify(add));

  // a call with progress: the notifications reach the host on stdout
  const prog = await peer.request('tools/call', { name: 'progress', arguments: { steps: 3, ms: 50 },
    _meta: { progressToken: 'tok-1' } });
  assert.equal(prog.result?.content?.[0]?.text, 'done 3', JSON.stringify(prog));
  const progress = peer.notifications.filter((n) => n.method === 'notifications/progress'
    && n.params?.progressToken === 'tok-1');
  assert.deepEqual(progress.map((n) => n.params.progress), [1, 2, 3]);

  // the upstream killed mid-call: the host gets an error answer within 1 s
  const pending = peer.request('tools/call', { name: 'slow', arguments: { ms: 20000 } }, 25000);
  await upstream.waitRunning();
  const t0 = performance.now();
  await upstream.kill();
  const failed = await pending;
  const ms = failed.at - t0;
  t.diagnostic(`${mode}: upstream killed -> error on stdout in ${ms.toFixed(0)} ms: ${JSON.stringify(failed.error ?? failed.result)}`);
  const isError = failed.error !== undefined || failed.result?.isError === true;
  assert.ok(isError, `expected an error, got ${JSON.stringify(failed)}`);
  assert.ok(ms < 1000, `error after ${ms} ms`);
  assert.match(JSON.stringify(failed), /upstream/);

  // the next call on the same proxy process succeeds once the upstream is back
  await upstream.restart();
  assert.equal(peer.child.exitCode, null, `mcp-remote exited; stderr:\n${peer.stderr}`);
  const again = await peer.request('tools/call', { name: 'add', arguments: { a: 40, b: 2 } });
  assert.equal(again.result?.content?.[0]?.text, '42', JSON.stringify(again));
}

test('mcp-remote --protocol auto (server/discover probe first)', (t) => scenario(t, 'auto'));
test('mcp-remote default (legacy initialize)', (t) => scenario(t, 'legacy'));
