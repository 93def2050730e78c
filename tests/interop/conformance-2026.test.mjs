// The official conformance suite's server scenarios for the stateless era
// (`--requirements 2026-07-28`: what that revision requires, run at its wire:
// per-request _meta, server/discover, input_required), run twice against the
// same fixture code (conformance-2026-fixture-server.mjs, TS SDK v2):
// directly, served natively over Streamable HTTP (the baseline), and through
// the bridge in front of the same tools served over legacy HTTP+SSE, where
// the fixture's input requests become server-to-client requests mid-call and
// the bridge must turn them back into input_required (MRTR).
//
// Compared scenario by scenario: a scenario passing directly must pass
// bridged unless PENDING_BRIDGE lists it with its reason; a listed scenario
// that passes bridged fails the test too (remove it from the list), so the
// list only shrinks.
//
// Direct baseline (conformance 0.2.0-alpha.12, @modelcontextprotocol/server
// 2.4.0): 39 of 50 scenarios pass — the 37 the revision requires plus
// http-header-validation and json-schema-2020-12 (not scored, pending
// upstream). Failing directly: the 10 tasks-* scenarios (an extension the
// fixture does not implement; tasks-status-notifications runs no check) and
// http-custom-header-server-validation (not scored: no tool of the fixture
// declares x-mcp-header parameters). Each run takes about 5 s.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { runConformance, scenarioPassed, spawnUntil, startBridge, stop } from './helpers.mjs';

const here = path.dirname(new URL(import.meta.url).pathname);
const DIRECT_BASELINE = 39;
// The bridge's flags for the bridged run.
const BRIDGE_ARGS = ['--log-level', 'info'];

// Passing directly, failing through the bridge (with the reason). Empty:
// every scenario passing directly passes bridged. The last one to go,
// input-required-result-basic-elicitation, checks the inputRequests key the
// reference server chose ("user_name"); a legacy elicitation/create carries
// no key, so the legacy fixture names it with the bridge's documented hint
// (params._meta["mcp-sse-bridge/inputKey"]).
const PENDING_BRIDGE = {};

const children = [];
after(async () => { for (const c of children) await stop(c); });

async function fixture(transport) {
  const s = await spawnUntil(process.execPath, [path.join(here, 'conformance-2026-fixture-server.mjs'),
    '--transport', transport], /LISTENING (\d+)/);
  children.push(s.child);
  return Number(s.match[1]);
}

test('conformance 2026-07-28: every scenario passing directly passes through the bridge, or is pending',
  { timeout: 300000 }, async () => {
    const directPort = await fixture('modern');
    const ssePort = await fixture('sse');
    const bridge = await startBridge(`http://127.0.0.1:${ssePort}/sse`, BRIDGE_ARGS);
    children.push(bridge.child);
    const direct = await runConformance(`http://127.0.0.1:${directPort}/mcp`, '2026-07-28');
    const bridged = await runConformance(bridge.url, '2026-07-28');

    const rows = Object.keys(direct).map((name) => ({
      name, d: scenarioPassed(direct[name]), b: scenarioPassed(bridged[name]), note: PENDING_BRIDGE[name] ?? '',
    }));
    const count = (k) => rows.filter((r) => r[k]).length;
    console.log('# | scenario | direct (Streamable HTTP, 2026-07-28) | bridged (legacy SSE upstream) | pending |');
    console.log('# |---|---|---|---|');
    for (const r of rows) console.log(`# | ${r.name} | ${r.d ? 'pass' : 'FAIL'} | ${r.b ? 'pass' : 'FAIL'} | ${r.note} |`);
    console.log(`# passing: direct ${count('d')}/${rows.length}, bridged ${count('b')}/${rows.length}, ` +
      `pending ${Object.keys(PENDING_BRIDGE).length}`);

    // The baseline itself: the fixture still serves what the suite requires.
    assert.ok(count('d') >= DIRECT_BASELINE, `only ${count('d')} scenarios pass directly (baseline ${DIRECT_BASELINE})`);
    const regressions = rows.filter((r) => r.d && !r.b && !(r.name in PENDING_BRIDGE)).map((r) => r.name);
    assert.deepEqual(regressions, [], `passing directly, failing through the bridge, not pending: ${regressions}`);
    const nowPassing = Object.keys(PENDING_BRIDGE).filter((n) => rows.find((r) => r.name === n)?.b);
    assert.deepEqual(nowPassing, [], `pending scenarios that pass through the bridge now (remove them from PENDING_BRIDGE): ${nowPassing}`);
    // Every pending entry names a scenario that runs and passes directly.
    const stale = Object.keys(PENDING_BRIDGE).filter((n) => !rows.find((r) => r.name === n)?.d);
    assert.deepEqual(stale, [], `PENDING_BRIDGE entries that do not pass directly: ${stale}`);
  });
