// Real-network scenarios (issue #11 part 3), run by run.sh inside the bridge's
// network namespace: the upstream (example legacy server) sits behind a veth
// pair in another namespace, and faults are nftables rules on the veth ends:
//   black hole  `drop` on both ends, in and out (no FIN, no RST: the path vanishes)
//   loss        `numgen random mod 100 < 3 drop` on the bridge's end, in and out
//               (3 % of the packets in each direction)
//   link flap   black hole for 3 s, then the rules are flushed
// Each scenario starts its own bridge process (nothing cached or pooled from
// an earlier one), drives it with the official TS SDK v1 client, asserts what
// the client sees and how long it took, and prints every measured time.
//
// Env (set by run.sh): BRIDGE_BIN, UPSTREAM_URL, NET_BR_NS, NET_UP_NS;
// optional NET_PROFILES (default,tight) and NET_SCENARIOS (1,2,3,4,5).
// NET_SELFTEST_NO_FAULTS=1 turns every fault into a no-op: every scenario but
// the flap with default flags must then FAIL (proof that the assertions can).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const sdkDir = path.join(here, '..', 'interop', 'node_modules', '@modelcontextprotocol', 'sdk', 'dist', 'esm');
const sdk = (p) => import(pathToFileURL(path.join(sdkDir, p)).href);
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { McpError } = await sdk('types.js');

const BRIDGE_BIN = process.env.BRIDGE_BIN;
const UPSTREAM_URL = process.env.UPSTREAM_URL;
const UP_NS = process.env.NET_UP_NS;
if (!BRIDGE_BIN || !UPSTREAM_URL || !UP_NS) throw new Error('run me through tests/network/run.sh');
if (process.env.NET_SELFTEST_NO_FAULTS === '1') console.log('# NET_SELFTEST_NO_FAULTS=1: faults are no-ops, the scenarios must fail');

// ---- profiles -------------------------------------------------------------
// The issue's bound: with default flags a call on a path that died silently
// fails within 10 s with an error that says so (never the 120 s request
// timeout), and the next call after the path heals succeeds on the same client
// session. With the tight flags: within 4 s.
const TIGHT_FLAGS = [
  ['--connect-timeout', '1s'], ['--post-timeout', '1s'], ['--ping-interval', '1s'],
  ['--ping-timeout', '1s'], ['--upstream-tcp-keepalive', '1s'],
  ['--upstream-tcp-user-timeout', '3s'], ['--idle-probe-timeout', '500ms'],
];
const PROFILES = [
  { name: 'default', args: [], bound: 10000, flap: 'succeeds' },
  { name: 'tight', args: TIGHT_FLAGS.flat(), bound: 4000, flap: 'fails' },
];
const wantedProfiles = (process.env.NET_PROFILES ?? 'default,tight').split(',');
const wantedScenarios = (process.env.NET_SCENARIOS ?? '1,2,3,4,5').split(',');

const RECOVERY_CAP_MS = 15000;   // the call after healing must succeed within this
const LOSS_CALL_BOUND_MS = 10000; // "a generous bound" per call at 3 % loss
const LOSS_BUDGET_MS = 60000;    // the whole loss scenario (keeps the suite bounded)
const IDLE_MS = 12000;           // scenario 2: idle time before the call...
const IDLE_FAULT_AT_MS = 10000;  // ...with the black hole starting this far into it
const FLAP_MS = 3000;
const BIG_BYTES = 256 * 1024;
const observeCap = (bound) => Math.max(2.5 * bound, bound + 10000); // how long a late answer is waited for

class ScenarioError extends Error {}

// ---- processes ---------------------------------------------------------------
const T0 = performance.now();
const stamp = () => `+${((performance.now() - T0) / 1000).toFixed(3)}s`;
const note = (s) => console.log(`# ${s}`);
const children = new Set();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const exec = promisify(execFile);
const NO_FAULTS = process.env.NET_SELFTEST_NO_FAULTS === '1';
async function nftLocal(args) { return (await exec('nft', args, { timeout: 5000 })).stdout; }
async function nftUp(args) { await exec('ip', ['netns', 'exec', UP_NS, 'nft', ...args], { timeout: 5000 }); }
const fault = {
  async blackhole() {
    if (NO_FAULTS) return;
    const rule = ['add', 'rule', 'inet', 'msb', 'fault', 'drop'];
    await Promise.all([nftLocal(rule), nftUp(rule)]);
  },
  async loss(pct) {
    if (NO_FAULTS) return;
    await nftLocal(['add', 'rule', 'inet', 'msb', 'fault', 'numgen', 'random', 'mod', '100', '<', String(pct),
      'counter', 'drop']);
  },
  // Packets through the bridge's veth end (both directions) and those the loss rule dropped.
  async counters() {
    const out = await nftLocal(['list', 'table', 'inet', 'msb']);
    const n = (re) => [...out.matchAll(re)].reduce((a, m) => a + Number(m[1]), 0);
    return { packets: n(/ifname "[^"]+" counter packets (\d+)/g), dropped: n(/numgen .* counter packets (\d+)/g) };
  },
  async heal() {
    const flush = ['flush', 'chain', 'inet', 'msb', 'fault'];
    await Promise.all([nftLocal(flush), nftUp(flush)]);
  },
};

// Flags this bridge binary does not know (each probed alone with --check-config).
async function unknownFlags(pairs) {
  const unknown = [];
  for (const [flag, value] of pairs) {
    try {
      await exec(BRIDGE_BIN, ['--upstream', UPSTREAM_URL, flag, value, '--check-config'], { timeout: 5000 });
    } catch (e) {
      const msg = `${e.stderr ?? ''}${e.stdout ?? ''}`.trim();
      unknown.push(`${flag} ${value} (exit ${e.code}: ${msg})`);
    }
  }
  return unknown;
}

async function startBridge(profile, extra = []) {
  const args = ['--upstream', UPSTREAM_URL, '--listen', '127.0.0.1:0', ...profile.args, ...extra];
  const child = spawn(BRIDGE_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const lines = [];
  let partial = '';
  const onData = (d) => {
    partial += d.toString();
    const parts = partial.split('\n');
    partial = parts.pop();
    for (const l of parts) lines.push(`[driver ${stamp()}] ${l}`);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new ScenarioError(`bridge did not print its URL in 10 s:\n${lines.join('\n')}`)), 10000);
    const check = () => {
      const m = lines.join('\n').match(/listening url=(http:\/\/127\.0\.0\.1:\d+\/mcp)/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    };
    child.stderr.on('data', check);
    child.stdout.on('data', check);
    child.on('exit', (code) => {
      clearTimeout(timer);
      onData('\n');
      const out = lines.join('\n');
      if (code === 2 && /error:.*not/i.test(out))
        reject(new ScenarioError(`the bridge refused its flags (exit 2), it does not know them yet: ${out}`));
      else reject(new ScenarioError(`bridge exited (${code}) before listening:\n${out}`));
    });
  });
  child.removeAllListeners('exit');
  child.on('exit', () => children.delete(child));
  return { child, url, lines, args };
}

function stopBridge(b) {
  if (!b || b.child.exitCode !== null || b.child.signalCode !== null) return Promise.resolve();
  return Promise.race([new Promise((resolve) => {
    b.child.once('exit', resolve);
    b.child.kill('SIGKILL');
  }), sleep(3000)]);
}

async function connectClient(url, capMs = 15000) {
  const client = new Client({ name: 'network-suite', version: '1.0.0' });
  const r = await observe(client.connect(new StreamableHTTPClientTransport(new URL(url)), { timeout: 300000 }),
    performance.now(), capMs);
  if (!r.settled) { await client.close().catch(() => {}); throw new ScenarioError(`initialize not answered in ${capMs} ms`); }
  if (!r.ok) {
    await client.close().catch(() => {});
    throw new ScenarioError(`initialize failed after ${r.ms.toFixed(0)} ms: ${describeError(r.error)}`);
  }
  return client;
}

// Settles with {settled, ok, value | error, ms since t0}; never waits past capMs.
function observe(p, t0, capMs, onTimeout = () => {}) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { onTimeout(); resolve({ settled: false, ms: performance.now() - t0 }); }, capMs);
    p.then((value) => { clearTimeout(timer); resolve({ settled: true, ok: true, value, ms: performance.now() - t0 }); },
      (error) => { clearTimeout(timer); resolve({ settled: true, ok: false, error, ms: performance.now() - t0 }); });
  });
}

// A tool call with the SDK's own timeout out of the way (5 min): whatever
// rejects the call within the test's window is the bridge's answer.
function call(client, name, args, opts = {}) {
  const ac = new AbortController();
  const p = client.callTool({ name, arguments: args }, undefined,
    { timeout: 300000, signal: ac.signal, ...opts });
  p.catch(() => {});
  return { p, abort: () => ac.abort() };
}

async function waitFor(pred, ms) {
  const end = performance.now() + ms;
  while (performance.now() < end) { if (pred()) return true; await sleep(20); }
  return pred();
}

const isBridgeError = (e) => e instanceof McpError && typeof e.code === 'number' && Boolean(e.data?.bridge?.kind);
const describeError = (e) => {
  if (!e) return '(none)';
  const b = e.data?.bridge;
  return b ? `code ${e.code} kind=${b.kind} phase=${b.phase} elapsed_ms=${b.elapsed_ms} message="${e.message}"`
    : `${e.name ?? 'Error'}: ${e.message}${e.code !== undefined ? ` (code ${e.code})` : ''}`;
};
const describeOutcome = (r) => !r.settled ? `still pending after ${r.ms.toFixed(0)} ms`
  : r.ok ? `succeeded after ${r.ms.toFixed(0)} ms` : `rejected after ${r.ms.toFixed(0)} ms: ${describeError(r.error)}`;

// ---- results -------------------------------------------------------------------
const results = [];
// Scenario -> profile -> short text, printed at the end as a markdown table
// (the README's failure table takes its rows from it).
const table = new Map();
const cell = (r) => !r.settled ? `no answer in ${(r.ms / 1000).toFixed(1)} s`
  : r.ok ? `succeeded, ${(r.ms / 1000).toFixed(2)} s`
    : `${r.error?.data?.bridge?.kind ?? 'non-bridge error'}` +
      `${r.error?.data?.bridge?.phase ? ` (${r.error.data.bridge.phase})` : ''} in ${(r.ms / 1000).toFixed(2)} s`;
function setCell(scenario, profile, text, append = false) {
  if (!table.has(scenario)) table.set(scenario, new Map());
  const row = table.get(scenario);
  row.set(profile.name, append && row.has(profile.name) ? `${row.get(profile.name)}; ${text}` : text);
}
function record(profile, scenario, what, r, bound) {
  const line = `[${profile.name}] ${scenario}: ${what}: ${describeOutcome(r)}${bound ? ` (bound ${bound} ms)` : ''}`;
  results.push(line);
  note(line);
}

// One scenario: a fresh bridge, every problem collected (so one run tells all
// that is wrong), the bridge's log printed when anything failed.
async function scenario(profile, name, body) {
  const problems = [];
  const check = (cond, msg) => { if (!cond) problems.push(msg); return cond; };
  const ctx = { bridges: [], clients: [], check };
  ctx.start = async (extra) => { const b = await startBridge(profile, extra); ctx.bridges.push(b); return b; };
  ctx.client = async (url, cap) => { const c = await connectClient(url, cap); ctx.clients.push(c); return c; };
  await fault.heal();
  try {
    await body(ctx);
  } catch (e) {
    problems.push(`aborted: ${e instanceof ScenarioError ? e.message : e.stack ?? e}`);
  } finally {
    await fault.heal().catch((e) => problems.push(`heal failed: ${e.message}`));
    if (problems.length) {
      for (const b of ctx.bridges) {
        note(`[${profile.name}] ${name}: bridge log (${b.args.slice(4).join(' ') || 'default flags'}):`);
        for (const l of b.lines.slice(-80)) note(`  ${l}`);
      }
    }
    for (const c of ctx.clients) await Promise.race([c.close().catch(() => {}), sleep(2000)]);
    for (const b of ctx.bridges) await stopBridge(b);
  }
  if (problems.length) assert.fail(`[${profile.name}] ${name}:\n  - ${problems.join('\n  - ')}`);
}

// The call after the path healed succeeds on the same client session.
async function recoveryCall(profile, label, client, ctx) {
  const t = performance.now();
  const c = call(client, 'echo', { text: 'after heal' });
  const r = await observe(c.p, t, RECOVERY_CAP_MS, c.abort);
  record(profile, label, 'next call after healing', r);
  setCell(label, profile, r.settled && r.ok ? 'next call ok' : 'next call FAILED', true);
  ctx.check(r.settled && r.ok && r.value?.content?.[0]?.text === 'after heal',
    `the call after healing did not succeed: ${describeOutcome(r)}`);
}

// The client's call failed with the bridge's JSON-RPC error within the bound.
function checkFailedFast(ctx, r, bound, what) {
  ctx.check(r.settled, `${what}: no answer ${r.ms.toFixed(0)} ms after the fault (bound ${bound} ms)`);
  if (!r.settled) return;
  ctx.check(!r.ok, `${what}: succeeded (${r.ms.toFixed(0)} ms) although the path was dead`);
  if (r.ok) return;
  ctx.check(isBridgeError(r.error), `${what}: not the bridge's JSON-RPC error: ${describeError(r.error)}`);
  ctx.check(r.ms < bound, `${what}: error after ${r.ms.toFixed(0)} ms, bound ${bound} ms (${describeError(r.error)})`);
}

// ---- scenarios -------------------------------------------------------------------
const SCENARIOS = {
  1: ['black hole mid-call', async (p, ctx) => {
    const b = await ctx.start();
    const client = await ctx.client(b.url);
    let progress = 0;
    const c = call(client, 'sleep', { ms: 20000 }, { onprogress: () => { progress++; } });
    ctx.check(await waitFor(() => progress >= 2, 5000), 'no progress notifications within 5 s of the sleep call');
    const t0 = performance.now();
    await fault.blackhole();
    const r = await observe(c.p, t0, observeCap(p.bound), c.abort);
    record(p, '1 black hole mid-call', `20 s sleep call (${progress} progress before the fault), from the black hole`, r, p.bound);
    setCell('1 black hole mid-call', p, cell(r));
    checkFailedFast(ctx, r, p.bound, 'call during the black hole');
    await fault.heal();
    await recoveryCall(p, '1 black hole mid-call', client, ctx);
  }],

  2: ['idle then call', async (p, ctx) => {
    const b = await ctx.start();
    const client = await ctx.client(b.url);
    const first = await observe(call(client, 'echo', { text: 'before idle' }).p, performance.now(), 10000);
    ctx.check(first.ok, `the first call failed: ${describeOutcome(first)}`);
    await sleep(IDLE_FAULT_AT_MS);
    await fault.blackhole();
    await sleep(IDLE_MS - IDLE_FAULT_AT_MS);
    const t0 = performance.now();
    const c = call(client, 'echo', { text: 'after idle' });
    const r = await observe(c.p, t0, observeCap(p.bound), c.abort);
    record(p, '2 idle then call', `call after ${IDLE_MS / 1000} s idle (black hole since ${(IDLE_MS - IDLE_FAULT_AT_MS) / 1000} s), from the call`, r, p.bound);
    setCell('2 idle then call', p, cell(r));
    checkFailedFast(ctx, r, p.bound, 'call after idle on a dead path');
    if (r.settled && !r.ok) {
      ctx.check(/unreachable|unresponsive/i.test(r.error.message),
        `the error does not say the upstream is unreachable/unresponsive: "${r.error.message}"`);
    }
    await fault.heal();
    await recoveryCall(p, '2 idle then call', client, ctx);
  }],

  3: ['at connect', async (p, ctx) => {
    const b = await ctx.start();
    await fault.blackhole();
    const t0 = performance.now();
    const client = new Client({ name: 'network-suite', version: '1.0.0' });
    ctx.clients.push(client);
    const init = await observe(client.connect(new StreamableHTTPClientTransport(new URL(b.url)), { timeout: 300000 }),
      t0, observeCap(p.bound));
    record(p, '3 at connect', 'initialize on a black-holed path (fresh bridge), from initialize', init, p.bound);
    setCell('3 at connect', p, `initialize: ${cell(init)}`);
    let live = null;
    if (init.settled && init.ok) {
      // Answered from a cache: then the first call must fail within the bound.
      note(`[${p.name}] 3 at connect: initialize succeeded (served without the upstream?); the first call must fail`);
      const c = call(client, 'echo', { text: 'first' });
      const r = await observe(c.p, t0, observeCap(p.bound), c.abort);
      record(p, '3 at connect', 'first call on a black-holed path, from initialize', r, p.bound);
      setCell('3 at connect', p, `first call: ${cell(r)}`, true);
      checkFailedFast(ctx, r, p.bound, 'first call on a black-holed path');
      live = client;
    } else {
      checkFailedFast(ctx, init, p.bound, 'initialize on a black-holed path');
    }
    await fault.heal();
    if (!live) {
      const t1 = performance.now();
      try {
        live = await ctx.client(b.url, RECOVERY_CAP_MS);
        note(`[${p.name}] 3 at connect: initialize after healing: ${(performance.now() - t1).toFixed(0)} ms`);
      } catch (e) {
        ctx.check(false, `initialize after healing failed: ${describeError(e)}`);
        return;
      }
    }
    await recoveryCall(p, '3 at connect', live, ctx);
  }],

  4: ['3 % loss both directions', async (p, ctx) => {
    const b = await ctx.start();
    await fault.loss(3);
    const before = await fault.counters();
    const tStart = performance.now();
    const client = await ctx.client(b.url, 20000);
    const times = [];
    let failed = 0;
    for (let i = 0; i < 20; i++) {
      if (performance.now() - tStart > LOSS_BUDGET_MS) {
        ctx.check(false, `only ${i} of 20 calls done within the scenario budget of ${LOSS_BUDGET_MS} ms`);
        break;
      }
      const big = i % 2 === 1;
      const t = performance.now();
      const c = big ? call(client, 'big', { bytes: BIG_BYTES }) : call(client, 'echo', { text: `loss ${i}` });
      const r = await observe(c.p, t, LOSS_CALL_BOUND_MS + 5000, c.abort);
      times.push(r.ms);
      const text = r.value?.content?.[0]?.text;
      const good = r.settled && r.ok && (big ? text?.length === BIG_BYTES : text === `loss ${i}`);
      if (!good) failed++;
      ctx.check(good, `call ${i} (${big ? 'big 256 KiB' : 'echo'}): ${describeOutcome(r)}`);
      ctx.check(!r.settled || r.ms < LOSS_CALL_BOUND_MS, `call ${i} took ${r.ms.toFixed(0)} ms (bound ${LOSS_CALL_BOUND_MS} ms)`);
    }
    const after = await fault.counters();
    const packets = after.packets - before.packets;
    const dropped = after.dropped - before.dropped;
    ctx.check(dropped > 0, `the loss rule dropped nothing (${packets} packets through the veth): no loss was tested`);
    const sorted = [...times].sort((a, z) => a - z);
    const line = `[${p.name}] 4 3 % loss: ${times.length} calls, ${failed} failed; per call ms: min ${sorted[0]?.toFixed(0)}, ` +
      `median ${sorted[Math.floor(sorted.length / 2)]?.toFixed(0)}, max ${sorted[sorted.length - 1]?.toFixed(0)} ` +
      `(bound ${LOSS_CALL_BOUND_MS} ms each); all: ${times.map((t) => t.toFixed(0)).join(' ')}; ` +
      `${dropped} of ${packets} packets dropped (${(100 * dropped / Math.max(1, packets)).toFixed(1)} %)`;
    results.push(line);
    note(line);
    setCell('4 3 % loss', p, `${times.length - failed}/20 ok, max ${((sorted[sorted.length - 1] ?? 0) / 1000).toFixed(2)} s ` +
      `(${(100 * dropped / Math.max(1, packets)).toFixed(1)} % dropped)`);
  }],

  5: ['3 s link flap mid-call', async (p, ctx) => {
    const b = await ctx.start();
    const client = await ctx.client(b.url);
    const warm = await observe(call(client, 'echo', { text: 'warm' }).p, performance.now(), 10000);
    ctx.check(warm.ok, `the first call failed: ${describeOutcome(warm)}`);
    const progressAt = [];
    const tCall = performance.now();
    const c = call(client, 'sleep', { ms: 6000 }, { onprogress: () => { progressAt.push(performance.now()); } });
    await sleep(1000);
    ctx.check(progressAt.length > 0, 'no progress notification in the first second of the sleep call');
    const t0 = performance.now();
    await fault.blackhole();
    const healed = sleep(FLAP_MS - (performance.now() - t0)).then(() => fault.heal());
    const cap = p.flap === 'succeeds' ? 30000 : observeCap(p.bound);
    const r = await observe(c.p, t0, cap, c.abort);
    await healed;
    record(p, '5 link flap', `6 s sleep call, 3 s flap from ${((t0 - tCall) / 1000).toFixed(1)} s; ` +
      `from the flap's start (call age at the answer: ${(r.ms + t0 - tCall).toFixed(0)} ms)`, r,
    p.flap === 'fails' ? p.bound : undefined);
    setCell('5 link flap', p, p.flap === 'succeeds' && r.settled && r.ok
      ? `call succeeded, ${((r.ms + t0 - tCall) / 1000).toFixed(2)} s for a 6 s call` : cell(r));
    if (p.flap === 'succeeds') {
      ctx.check(r.settled && r.ok && r.value?.content?.[0]?.text === 'slept 6000 ms',
        `the call across a 3 s flap did not succeed: ${describeOutcome(r)}`);
      // The flap was real: progress (every 120 ms) stalled for most of it.
      const gaps = progressAt.map((t, i) => (i ? t - progressAt[i - 1] : 0));
      const gap = Math.max(0, ...gaps);
      note(`[${p.name}] 5 link flap: ${progressAt.length} progress notifications, longest gap ${gap.toFixed(0)} ms`);
      ctx.check(gap >= FLAP_MS - 500, `progress never stalled for the flap (longest gap ${gap.toFixed(0)} ms)`);
    } else {
      checkFailedFast(ctx, r, p.bound, 'call across a 3 s flap (tight flags)');
    }
    await recoveryCall(p, '5 link flap', client, ctx);
  }],
};

// ---- the suite -------------------------------------------------------------------
for (const profile of PROFILES.filter((p) => wantedProfiles.includes(p.name))) {
  describe(`${profile.name} flags (bound ${profile.bound / 1000} s)`, () => {
    if (profile.name === 'tight') {
      test('the bridge knows every tight flag', async () => {
        const unknown = await unknownFlags(TIGHT_FLAGS);
        if (unknown.length) note(`[tight] flags the bridge refuses: ${unknown.map((u) => u.split(' (')[0]).join(', ')}`);
        assert.deepEqual(unknown, [], 'the bridge refuses tight flags');
      });
    }
    for (const [n, [name, body]] of Object.entries(SCENARIOS)) {
      if (!wantedScenarios.includes(n)) continue;
      test(`${n}. ${name}`, { timeout: 120000 }, () => scenario(profile, name, (ctx) => body(profile, ctx)));
    }
  });
}

after(() => {
  note(`measured (${((performance.now() - T0) / 1000).toFixed(1)} s in all):`);
  for (const l of results) note(`  ${l}`);
  const profiles = PROFILES.filter((p) => wantedProfiles.includes(p.name));
  note('');
  note(`| scenario | ${profiles.map((p) => `${p.name} flags (bound ${p.bound / 1000} s)`).join(' | ')} |`);
  note(`|---|${profiles.map(() => '---').join('|')}|`);
  for (const [scenario, row] of table)
    note(`| ${scenario} | ${profiles.map((p) => row.get(p.name) ?? '-').join(' | ')} |`);
});
