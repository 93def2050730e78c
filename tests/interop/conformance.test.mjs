// The official conformance suite's server scenarios for the session era
// (`--requirements 2025-11-25`: the scenarios that revision requires, run at
// its wire, initialize and sessions; the 2026-07-28 run is
// conformance-2026.test.mjs), run twice in the same run against the same
// fixture code: directly over Streamable HTTP (the baseline), and through the
// bridge in front of the fixtures served over legacy HTTP+SSE. Every scenario
// that passes directly must pass bridged, except those that cannot work with
// per-call upstream sessions, listed here with the reason. Each run takes
// about 5 s (conformance 0.2.0-alpha.12, 33 scenarios).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { runConformance, scenarioPassed, spawnUntil, startBridge, stop } from './helpers.mjs';

const here = path.dirname(new URL(import.meta.url).pathname);
const KNOWN_PER_CALL_LIMITS = {
  'resources-subscribe': 'updates need a standalone GET stream; the bridge answers a clear error instead of a false success',
  'resources-unsubscribe': 'same as resources-subscribe',
};
// Scenarios that fail both ways, with the reason (not exemptions: the
// assertion below only concerns scenarios that pass directly).
const ALSO_FAILS_DIRECTLY = {
  'server-sse-polling': 'pending SEP-1699 scenario: needs a test_reconnection fixture and resumable streams (event ids + Last-Event-ID), which neither the fixture nor the bridge implement',
};
const children = [];
after(async () => { for (const c of children) await stop(c); });

async function fixture(transport) {
  const s = await spawnUntil(process.execPath, [path.join(here, 'conformance-fixture-server.mjs'),
    '--transport', transport], /LISTENING (\d+)/);
  children.push(s.child);
  return Number(s.match[1]);
}

test('conformance: every scenario passing directly passes through the bridge', { timeout: 300000 }, async () => {
  const directPort = await fixture('streamable');
  const ssePort = await fixture('sse');
  const bridge = await startBridge(`http://127.0.0.1:${ssePort}/sse`, ['--log-level', 'info']);
  children.push(bridge.child);
  const direct = await runConformance(`http://127.0.0.1:${directPort}/mcp`, '2025-11-25');
  const bridged = await runConformance(bridge.url, '2025-11-25');

  const ok = scenarioPassed;
  const rows = Object.keys(direct).map((name) => {
    const d = ok(direct[name]);
    const b = ok(bridged[name]);
    const note = KNOWN_PER_CALL_LIMITS[name] ?? ALSO_FAILS_DIRECTLY[name] ?? '';
    return { name, d, b, note };
  });
  const count = (k) => rows.filter((r) => r[k]).length;
  console.log(`# | scenario | direct (Streamable HTTP) | bridged (legacy SSE upstream) | note |`);
  console.log(`# |---|---|---|---|`);
  for (const r of rows) console.log(`# | ${r.name} | ${r.d ? 'pass' : 'FAIL'} | ${r.b ? 'pass' : 'FAIL'} | ${r.note} |`);
  console.log(`# passing: direct ${count('d')}/${rows.length}, bridged ${count('b')}/${rows.length}`);

  const regressions = rows.filter((r) => r.d && !r.b && !KNOWN_PER_CALL_LIMITS[r.name]).map((r) => r.name);
  assert.deepEqual(regressions, [], `scenarios passing directly but failing through the bridge: ${regressions}`);
  // The known limits must still be what they say: passing directly.
  for (const name of Object.keys(KNOWN_PER_CALL_LIMITS)) assert.ok(rows.find((r) => r.name === name)?.d, name);
  assert.ok(count('b') >= 28, `only ${count('b')} scenarios pass through the bridge`);
});

// Session mode (--upstream-mode session: one upstream session per client
// session, a GET stream, subscriptions forwarded) serves what per-call
// sessions cannot: there every scenario passing directly passes bridged,
// the subscription scenarios included.
test('conformance, session mode: every scenario passing directly passes through the bridge', { timeout: 300000 }, async () => {
  const directPort = await fixture('streamable');
  const ssePort = await fixture('sse');
  const bridge = await startBridge(`http://127.0.0.1:${ssePort}/sse`,
    ['--log-level', 'info', '--upstream-mode', 'session']);
  children.push(bridge.child);
  const direct = await runConformance(`http://127.0.0.1:${directPort}/mcp`, '2025-11-25');
  const bridged = await runConformance(bridge.url, '2025-11-25');
  const names = Object.keys(direct);
  const passing = (r) => names.filter((n) => scenarioPassed(r[n]));
  console.log(`# session mode: direct ${passing(direct).length}/${names.length}, bridged ${passing(bridged).length}/${names.length}`);
  const regressions = passing(direct).filter((n) => !scenarioPassed(bridged[n]));
  assert.deepEqual(regressions, [], `session mode: passing directly, failing through the bridge: ${regressions}`);
  for (const name of Object.keys(KNOWN_PER_CALL_LIMITS)) assert.ok(scenarioPassed(bridged[name]), `session mode serves ${name}`);
});

// The fixture advertises resources.subscribe; with per-call upstream sessions
// nothing could deliver the updates, so the bridge removes that promise from
// the initialize result it relays — and from the one it answers from its
// cache while the upstream is down.
test('bridge: resources.subscribe is not advertised, live or from the cache', { timeout: 60000 }, async () => {
  const ssePort = await fixture('sse');
  const bridge = await startBridge(`http://127.0.0.1:${ssePort}/sse`);
  children.push(bridge.child);
  const init = () => fetch(bridge.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {
      protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'caps', version: '1' } } }),
  }).then((r) => r.json());
  const live = await init();
  assert.ok(live.result.capabilities.resources, 'resources capability kept');
  assert.equal(live.result.capabilities.resources.subscribe, undefined);
  await stop(children.at(-2));  // the fixture: the next initialize is answered from the cache
  const cached = await init();
  assert.equal(cached.id, 1);
  assert.ok(cached.result.capabilities.resources);
  assert.equal(cached.result.capabilities.resources.subscribe, undefined);
});
