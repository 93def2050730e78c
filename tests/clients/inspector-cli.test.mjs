// MCP Inspector CLI (`inspector --cli URL --method ...`): one process per
// method, each its own connect (probe/initialize), request and exit. Run with
// `--protocol-era auto` (probes `server/discover` first, the newest clients'
// behaviour) and with the default (legacy `initialize`).
// inspector CLI -> bridge -> legacy TS SDK SSE server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { node22, inspectorCli, startBridge, startUpstream, scratchDir, isolatedEnv, run, launch, stop, timeoutAfter } from './lib.mjs';

let upstream, bridge, home;

before(async () => {
  upstream = await startUpstream();
  bridge = await startBridge(upstream.sseUrl);
  home = scratchDir('inspector-');
});

after(async () => {
  await bridge?.stop();
  await upstream?.stop();
  home?.remove();
});

const cliArgs = (era, method, extra = []) => [inspectorCli, '--cli', bridge.url, '--transport', 'http',
  ...(era === 'auto' ? ['--protocol-era', 'auto'] : []), '--connect-timeout', '10000',
  '--format', 'json', '--method', method, ...extra];

async function inspector(era, method, extra) {
  const r = await run(node22, cliArgs(era, method, extra), { env: isolatedEnv(home.dir), cwd: home.dir, timeoutMs: 30000 });
  return { ...r, json: (() => { try { return JSON.parse(r.stdout); } catch { return undefined; } })() };
}

const ok = (r) => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

async function scenario(t, era) {
  // connect + list
  const list = await inspector(era, 'tools/list');
  assert.equal(list.code, 0, ok(list));
  const names = list.json?.result?.tools?.map((x) => x.name) ?? list.json?.tools?.map((x) => x.name);
  for (const name of ['add', 'slow', 'progress']) assert.ok(names?.includes(name), `${name} in ${ok(list)}`);

  // a call
  const add = await inspector(era, 'tools/call', ['--tool-name', 'add', '--tool-arg', 'a=2', 'b=3']);
  assert.equal(add.code, 0, ok(add));
  assert.equal((add.json?.result ?? add.json)?.content?.[0]?.text, '5', ok(add));

  // a call with progress: the CLI prints no notifications, so the proof is the
  // upstream's count of progress notifications sent for the token the CLI put
  // in _meta (--tool-metadata), and the call's result.
  const before = (await upstream.stats()).progressSent;
  const prog = await inspector(era, 'tools/call', ['--tool-name', 'progress', '--tool-arg', 'steps=3', 'ms=50',
    '--tool-metadata', 'progressToken=inspector-1']);
  assert.equal(prog.code, 0, ok(prog));
  assert.equal((prog.json?.result ?? prog.json)?.content?.[0]?.text, 'done 3', ok(prog));
  assert.equal((await upstream.stats()).progressSent - before, 3);

  // the upstream killed mid-call: the CLI reports the error and exits within 1 s
  const slow = launch(node22, cliArgs(era, 'tools/call', ['--tool-name', 'slow', '--tool-arg', 'ms=20000']),
    { env: isolatedEnv(home.dir), cwd: home.dir });
  t.after(() => stop(slow.child));
  await upstream.waitRunning(15000);
  const t0 = performance.now();
  await upstream.kill();
  const exit = await Promise.race([slow.exited, timeoutAfter(10000)]);
  const ms = slow.exitMs - t0;
  t.diagnostic(`${era}: upstream killed -> CLI exited ${exit?.code} in ${ms.toFixed(0)} ms: ${slow.stderr.trim().split('\n').pop()}`);
  assert.notEqual(exit, 'timeout', 'the CLI did not exit within 10 s');
  assert.notEqual(exit.code, 0, `the call should have failed\n${slow.stdout}\n${slow.stderr}`);
  assert.ok(ms < 1000, `exited ${ms} ms after the kill`);
  assert.match(slow.stderr + slow.stdout, /upstream/);

  // the next call (a new CLI process: the CLI has no longer-lived session) succeeds
  await upstream.restart();
  const again = await inspector(era, 'tools/call', ['--tool-name', 'add', '--tool-arg', 'a=40', 'b=2']);
  assert.equal(again.code, 0, ok(again));
  assert.equal((again.json?.result ?? again.json)?.content?.[0]?.text, '42', ok(again));
}

test('inspector CLI --protocol-era auto', (t) => scenario(t, 'auto'));
test('inspector CLI default era (legacy initialize)', (t) => scenario(t, 'legacy'));

test('inspector CLI while the upstream is down: the one-shot call fails at once and names the cause', async () => {
  await upstream.kill();
  try {
    const r = await inspector('auto', 'tools/call', ['--tool-name', 'add', '--tool-arg', 'a=1', 'b=2']);
    console.log(`# upstream down: exit ${r.code} in ${r.ms.toFixed(0)} ms: ${r.stderr.trim().split('\n').pop()}`);
    assert.notEqual(r.code, 0, ok(r));
    assert.match(r.stderr + r.stdout, /upstream unreachable/, ok(r));
    assert.ok(r.ms < 5000, `took ${r.ms} ms`);
  } finally {
    await upstream.restart();
  }
});
