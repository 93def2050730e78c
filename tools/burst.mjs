#!/usr/bin/env node
// tools/burst.mjs: a burst of official TS SDK clients initializing at once
// against the bridge (#12: 500 at once, all connect; a configured cap answers
// 503 with Retry-After, the request's id, and a log line).
//
// Starts the example legacy server (build-release/tools/mcp-bridge-upstream,
// many threads so that the upstream is not what refuses) and the bridge on
// 127.0.0.1 port 0, or uses --url of a bridge already running. Then creates
// --clients SDK clients (@modelcontextprotocol/sdk Client +
// StreamableHTTPClientTransport, from tests/interop/node_modules) and starts
// them all in the same tick. A client "connects" when initialize (with
// notifications/initialized) and one tools/list succeed. Every non-2xx answer
// to a POST is recorded through the transport's fetch: HTTP status,
// Retry-After, the JSON-RPC id of the request and of the error body.
//
// Prints "connected N/M", connect times (p50, p99, slowest) and the refusal
// breakdown, then a TARGET| line for tools/bench-core.sh:
//   --expect all       (default) met when every client connects
//   --expect refusals  met when at least one client was refused and every
//                      client that did not connect got 503 + Retry-After +
//                      its request's id (no timeouts, no network errors), and
//                      the bridge logged refusals
// Exit code 0 = met, 1 = missed, 2 = could not run. Every wait is bounded;
// the whole run by --max-seconds; children are killed on exit.
//
//   node tools/burst.mjs --bridge build-release/mcp-sse-bridge
//   node tools/burst.mjs --expect refusals --bridge-flag=--max-inflight=50
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const { values: o } = parseArgs({
  options: {
    bridge: { type: 'string', default: path.join(repo, 'build-release/mcp-sse-bridge') },
    upstream: { type: 'string', default: path.join(repo, 'build-release/tools/mcp-bridge-upstream') },
    'upstream-threads': { type: 'string', default: '2048' },
    url: { type: 'string' },
    'interop-dir': { type: 'string', default: process.env.MSB_INTEROP_DIR ?? path.join(repo, 'tests/interop') },
    clients: { type: 'string', default: '500' },
    'bridge-flag': { type: 'string', multiple: true, default: [] },
    'timeout-ms': { type: 'string', default: '30000' },
    expect: { type: 'string', default: 'all' },
    key: { type: 'string', default: '' },
    'max-seconds': { type: 'string', default: '120' },
  },
});
const N = Number(o.clients);
const timeoutMs = Number(o['timeout-ms']);
if (!['all', 'refusals'].includes(o.expect)) {
  console.error('burst: --expect is all or refusals');
  process.exit(2);
}

// ---- children ------------------------------------------------------------------
const children = new Set();
function killAll() { for (const c of children) { try { c.kill('SIGKILL'); } catch {} } }
process.on('exit', killAll);
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => { killAll(); process.exit(3); });
setTimeout(() => {
  console.error(`burst: --max-seconds ${o['max-seconds']} reached, stopping`);
  killAll();
  process.exit(3);
}, Number(o['max-seconds']) * 1000).unref();

// Spawns cmd and resolves with {child, match} once `pattern` shows on stdout
// or stderr; rejects after timeoutMs or if the process exits first.
function spawnUntil(cmd, args, pattern, timeoutMs, onLine) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    child.on('exit', () => children.delete(child));
    let seen = '', done = false, partial = '';
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      child.kill('SIGKILL');
      reject(new Error(`${cmd} printed no ${pattern} within ${timeoutMs} ms:\n${seen}`));
    }, timeoutMs);
    const onData = (d) => {
      const s = d.toString();
      if (onLine) {
        partial += s;
        const lines = partial.split('\n');
        partial = lines.pop();
        for (const l of lines) onLine(l);
      }
      if (done) return;
      seen += s;
      const m = seen.match(pattern);
      if (m) { done = true; clearTimeout(timer); resolve({ child, match: m }); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (e) => { if (!done) { done = true; clearTimeout(timer); reject(e); } });
    child.on('exit', (code) => {
      if (!done) { done = true; clearTimeout(timer); reject(new Error(`${cmd} exited (${code}):\n${seen}`)); }
    });
  });
}

function stopChild(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, 3000);
    child.on('exit', () => { clearTimeout(t); resolve(); });
    try { child.stdin.end(); } catch {}
    child.kill('SIGTERM');
  });
}

const withTimeout = (p, ms) => Promise.race([p, new Promise((r) => setTimeout(r, ms))]);

// ---- the SDK ---------------------------------------------------------------------
const sdkDir = path.join(o['interop-dir'], 'node_modules/@modelcontextprotocol/sdk');
if (!existsSync(sdkDir)) {
  console.error(`burst: ${sdkDir} is missing: run tools/install-deps.sh --interop (or npm ci in tests/interop), ` +
    'or pass --interop-dir');
  console.log(`TARGET|${o.key || 'burst'}|burst of ${N} SDK clients|-|not run (no SDK)|MISSED`);
  process.exit(2);
}
const sdkVersion = JSON.parse(readFileSync(path.join(sdkDir, 'package.json'), 'utf8')).version;
const { Client } = await import(pathToFileURL(path.join(sdkDir, 'dist/esm/client/index.js')).href);
const { StreamableHTTPClientTransport } =
  await import(pathToFileURL(path.join(sdkDir, 'dist/esm/client/streamableHttp.js')).href);

// ---- start the upstream and the bridge ------------------------------------------
let url = o.url, bridge, upstream, refusalLogLines = 0, logLines = 0;
const bridgeFlags = o['bridge-flag'].flatMap((f) => {
  const eq = f.indexOf('=');  // --bridge-flag=--max-inflight=50 -> ['--max-inflight', '50']
  return f.startsWith('--') && eq > 0 ? [f.slice(0, eq), f.slice(eq + 1)] : [f];
});
try {
  if (!url) {
    upstream = await spawnUntil(o.upstream, ['--threads', o['upstream-threads'], '--exit-on-stdin-eof',
      '--max-seconds', o['max-seconds']], /LISTENING (\d+)/, 10000);
    const sse = `http://127.0.0.1:${upstream.match[1]}/sse`;
    bridge = await spawnUntil(o.bridge, ['--upstream', sse, '--listen', '127.0.0.1:0', '--log-level', 'info',
      ...bridgeFlags], /listening url=(http:\/\/127\.0\.0\.1:\d+\/mcp)/, 10000, (line) => {
      logLines++;
      if (/refused/.test(line) && /status="?(503|429)/.test(line)) refusalLogLines++;
    });
    url = bridge.match[1];
  }
} catch (e) {
  console.error(`burst: cannot start: ${e.message}`);
  console.log(`TARGET|${o.key || 'burst'}|burst of ${N} SDK clients|-|not run (start failed)|MISSED`);
  process.exit(2);
}

// ---- the burst ----------------------------------------------------------------
function recordingFetch(rec) {
  return async (input, init) => {
    const method = init?.method ?? 'GET';
    let msg;
    if (method === 'POST' && typeof init?.body === 'string') { try { msg = JSON.parse(init.body); } catch {} }
    let res;
    try {
      res = await fetch(input, init);
    } catch (e) {
      rec.network.push({ method: msg?.method ?? method, error: String(e?.cause?.code ?? e?.message ?? e) });
      throw e;
    }
    if (!res.ok && !(method === 'GET' && res.status === 405)) {
      const text = await res.clone().text().catch(() => '');
      let body;
      try { body = JSON.parse(text); } catch {}
      rec.refusals.push({
        http: method, method: msg?.method ?? `${method} (stream)`, status: res.status,
        retryAfter: res.headers.get('retry-after'),
        reqId: msg?.id, bodyId: body ? (Object.hasOwn(body, 'id') ? body.id : undefined) : undefined,
        text: text.slice(0, 200),
      });
    }
    return res;
  };
}

async function one(i) {
  const rec = { refusals: [], network: [] };
  const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: recordingFetch(rec) });
  const client = new Client({ name: `burst-${i}`, version: '1.0.0' });
  const t0 = performance.now();
  try {
    await client.connect(transport, { timeout: timeoutMs });
    await client.listTools({}, { timeout: timeoutMs });
    return { ok: true, ms: performance.now() - t0, rec, client };
  } catch (e) {
    return { ok: false, ms: performance.now() - t0, rec, client, err: String(e?.message ?? e).slice(0, 200) };
  }
}

console.log(`burst: ${N} SDK clients (@modelcontextprotocol/sdk ${sdkVersion}) initializing at once against ${url}` +
  (bridgeFlags.length ? ` (bridge flags: ${bridgeFlags.join(' ')})` : ' (bridge defaults)'));
const t0 = performance.now();
const results = await Promise.all(Array.from({ length: N }, (_, i) => one(i)));
const wall = performance.now() - t0;
await withTimeout(Promise.allSettled(results.map((r) => r.client.close())), 5000);

// ---- report -------------------------------------------------------------------
const ok = results.filter((r) => r.ok);
const failed = results.filter((r) => !r.ok);
const times = ok.map((r) => r.ms).sort((a, b) => a - b);
const pct = (p) => (times.length ? times[Math.min(times.length - 1, Math.floor(p * times.length))] : 0);
console.log(`connected ${ok.length}/${N} (initialize + tools/list) in ${(wall / 1000).toFixed(2)} s`);
if (times.length)
  console.log(`connect time: p50 ${pct(0.5).toFixed(0)} ms, p99 ${pct(0.99).toFixed(0)} ms, ` +
    `slowest ${times[times.length - 1].toFixed(0)} ms`);
else console.log(`connect time: none connected (the burst was over after ${wall.toFixed(0)} ms)`);

// Every refusal seen (also on clients that later connected, e.g. a refused GET).
const all = results.flatMap((r) => r.rec.refusals);
const groups = new Map();
for (const x of all) {
  const idOk = x.reqId !== undefined && x.bodyId === x.reqId;
  const k = `${x.status} ${x.method}: Retry-After ${x.retryAfter !== null ? 'yes' : 'no'}, ` +
    (x.reqId === undefined ? 'no request id' : idOk ? 'id = request id' :
      `id ${JSON.stringify(x.bodyId ?? null)} (request id ${JSON.stringify(x.reqId)})`);
  groups.set(k, (groups.get(k) ?? 0) + 1);
}
if (all.length) {
  console.log(`refusals seen (non-2xx answers; ${all.length} in all):`);
  for (const [k, n] of [...groups].sort((a, b) => b[1] - a[1])) console.log(`  ${String(n).padStart(5)} × ${k}`);
  const ex = all.find((x) => x.http === 'POST');
  if (ex) console.log(`  e.g. body: ${ex.text}`);
}
const net = results.flatMap((r) => r.rec.network);
if (net.length) {
  const g = new Map();
  for (const x of net) g.set(`${x.method}: ${x.error}`, (g.get(`${x.method}: ${x.error}`) ?? 0) + 1);
  console.log(`network errors (${net.length}):`);
  for (const [k, n] of g) console.log(`  ${String(n).padStart(5)} × ${k}`);
}
// Why each failed client failed: its last refused POST, else a network error, else the SDK's error.
const whyFailed = new Map();
let wellFormed = 0;
for (const r of failed) {
  const posts = r.rec.refusals.filter((x) => x.http === 'POST');
  const last = posts[posts.length - 1];
  let k;
  if (last) {
    const good = last.status === 503 && last.retryAfter !== null && last.reqId !== undefined &&
      last.bodyId === last.reqId;
    if (good) wellFormed++;
    k = `refused ${last.status} on ${last.method}` + (good ? ' (503 + Retry-After + id)'
      : last.reqId === undefined ? ' (a notification: DESIGN.md §2 wants 202 for those)' : '');
  } else if (r.rec.network.length) {
    k = `network error: ${r.rec.network[r.rec.network.length - 1].error}`;
  } else {
    k = `other: ${r.err}`;
  }
  whyFailed.set(k, (whyFailed.get(k) ?? 0) + 1);
}
if (failed.length) {
  console.log(`clients that did not connect (${failed.length}):`);
  for (const [k, n] of [...whyFailed].sort((a, b) => b[1] - a[1])) console.log(`  ${String(n).padStart(5)} × ${k}`);
}
if (bridge) console.log(`bridge log lines "refused" with status 503/429: ${refusalLogLines} (of ${logLines}; the bridge rate-limits them)`);

let met, measured, target, what;
if (o.expect === 'all') {
  met = ok.length === N;
  what = `SDK clients connected, burst of ${N} at once` + (bridgeFlags.length ? ` (${bridgeFlags.join(' ')})` : ', default flags');
  target = `${N}/${N}`;
  measured = `${ok.length}/${N}` + (times.length ? `, slowest ${(times[times.length - 1] / 1000).toFixed(2)} s` : '');
} else {
  const refusedClients = failed.length;
  met = refusedClients > 0 && wellFormed === refusedClients && (!bridge || refusalLogLines > 0);
  what = `burst of ${N} with ${bridgeFlags.join(' ')}: every refusal 503 + Retry-After + request id + log line`;
  target = 'all refusals';
  measured = `${wellFormed}/${refusedClients} refused clients well-formed, ${ok.length} connected` +
    (bridge ? `, ${refusalLogLines} log lines` : '');
  if (refusedClients === 0) measured += ' (cap never hit: nothing checked)';
}
console.log(`${met ? 'MET' : 'MISSED'}: ${what}: ${measured}`);
console.log(`TARGET|${o.key || 'burst'}|${what}|${target}|${measured}|${met ? 'MET' : 'MISSED'}`);
await Promise.all([stopChild(bridge?.child), stopChild(upstream?.child)]);
process.exit(met ? 0 : 1);
