// Process helpers for interop tests: every wait is bounded, every child dies
// with the test.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const children = new Set();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

// Spawns a process and resolves with {child, match} once `pattern` appears on
// its stdout or stderr, or rejects after timeoutMs.
export function spawnUntil(cmd, args, pattern, timeoutMs = 10000, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    children.add(child);
    child.on('exit', () => children.delete(child));
    let seen = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} did not print ${pattern} within ${timeoutMs} ms; output:\n${seen}`));
    }, timeoutMs);
    const onData = (d) => {
      seen += d.toString();
      const m = seen.match(pattern);
      if (m) { clearTimeout(timer); resolve({ child, match: m, output: () => seen }); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited (${code}) before printing ${pattern}; output:\n${seen}`));
    });
  });
}

export function stop(child) {
  if (!child || child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, 3000);
    child.on('exit', () => { clearTimeout(t); resolve(); });
    child.kill('SIGTERM');
  });
}

export const bridgeBin = process.env.BRIDGE_BIN ?? '../../build/mcp-sse-bridge';

export async function startBridge(upstreamUrl, extraArgs = []) {
  const b = await spawnUntil(bridgeBin,
    ['--upstream', upstreamUrl, '--listen', '127.0.0.1:0', ...extraArgs],
    /listening url=(http:\/\/127\.0\.0\.1:\d+\/mcp)/);
  return { child: b.child, url: b.match[1], output: b.output };
}

export async function startTsLegacyServer() {
  const s = await spawnUntil(process.execPath, [new URL('./legacy-ts-server.mjs', import.meta.url).pathname],
    /LISTENING (\d+)/);
  const port = Number(s.match[1]);
  return { child: s.child, port, sseUrl: `http://127.0.0.1:${port}/sse`,
           control: (path) => fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST' }).then((r) => r.text()),
           stats: () => fetch(`http://127.0.0.1:${port}/control/stats`).then((r) => r.json()) };
}

// The legacy HTTP+SSE transport's two routes, for the fixture servers: GET /sse
// opens a session (`sessions` maps its id to the transport while the stream is
// open; connect(t, res) serves it), POST /message?sessionId= delivers to it
// (404 when unknown). Resolves true when the request was one of them.
export async function serveLegacySse(req, res, url, sessions, connect) {
  if (req.method === 'GET' && url.pathname === '/sse') {
    const { SSEServerTransport } = await import('@modelcontextprotocol/sdk/server/sse.js');
    const t = new SSEServerTransport('/message', res);
    sessions.set(t.sessionId, t);
    res.on('close', () => sessions.delete(t.sessionId));
    await connect(t, res);
    return true;
  }
  if (req.method === 'POST' && url.pathname === '/message') {
    const t = sessions.get(url.searchParams.get('sessionId'));
    if (!t) { res.writeHead(404).end('Session not found'); return true; }
    await t.handlePostMessage(req, res);
    return true;
  }
  return false;
}

// A `slow` call left pending (callOptions.slow), the upstream's streams killed
// 300 ms in: the call must reject within 1 s with "upstream closed", and the
// next call (callOptions.add) must succeed.
export async function assertDropFailsPendingCall(assert, client, upstream, callOptions = {}) {
  const pending = client.callTool({ name: 'slow', arguments: { ms: 20000 } }, callOptions.slow)
    .then(() => null, (e) => e);
  // Kill the streams once the call runs upstream (not after a fixed pause,
  // which a loaded machine can outlast while the session is still opening).
  assert.ok(await waitFor(async () => (await upstream.stats()).running > 0, 10000),
    'the slow call never started upstream');
  const t0 = performance.now();
  await upstream.control('/control/kill-streams');
  const err = await pending;
  assert.ok(err instanceof Error, 'the call should have failed');
  assert.ok(performance.now() - t0 < 1000);
  assert.match(String(err.message), /upstream closed/);
  const r = await client.callTool({ name: 'add', arguments: { a: 1, b: 1 } }, callOptions.add);
  assert.equal(r.content[0].text, '2');
}

// Polls pred() every 20 ms until it holds or timeoutMs passes.
export async function waitFor(pred, timeoutMs) {
  const end = performance.now() + timeoutMs;
  while (performance.now() < end) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return Boolean(await pred());
}

// @modelcontextprotocol/server-everything in its legacy SSE mode, on loopback.
export async function startEverythingSse(port = 0) {
  const entry = new URL('./node_modules/@modelcontextprotocol/server-everything/dist/index.js',
    import.meta.url).pathname;
  const s = await spawnUntil(process.execPath,
    ['--import', new URL('./loopback-only.mjs', import.meta.url).pathname, entry, 'sse'],
    /LISTENING (\d+)/, 15000, { env: { ...process.env, PORT: String(port) } });
  const bound = Number(s.match[1]);
  return { child: s.child, port: bound, sseUrl: `http://127.0.0.1:${bound}/sse` };
}

// Runs the official conformance suite's server scenarios (the pinned
// @modelcontextprotocol/conformance) against url with the scenario set and
// wire a spec revision requires (`--requirements <revision>`: 2025-11-25 is
// the session era, 2026-07-28 the stateless one). Resolves
// {scenario: {passed, failed}} (the suite's summary lines); rejects when the
// run takes longer than timeoutMs or prints no results.
export function runConformance(url, requirements, timeoutMs = 120000) {
  const here = new URL('.', import.meta.url).pathname;
  return new Promise((resolve, reject) => {
    const cwd = mkdtempSync(path.join(tmpdir(), 'conformance-'));
    const child = spawn(process.execPath, ['--import', path.join(here, 'shims/register.mjs'),
      path.join(here, 'node_modules/@modelcontextprotocol/conformance/dist/index.js'),
      'server', '--url', url, '--requirements', requirements], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`suite timed out:\n${out}`)); }, timeoutMs);
    child.on('exit', () => {
      clearTimeout(timer);
      children.delete(child);
      rmSync(cwd, { recursive: true, force: true });
      const results = {};
      for (const m of out.matchAll(/^[✓✗] ([\w/-]+): (\d+) passed, (\d+) failed/gmu)) {
        results[m[1]] = { passed: Number(m[2]), failed: Number(m[3]) };
      }
      if (Object.keys(results).length === 0) reject(new Error(`no results parsed:\n${out}`));
      else resolve(results);
    });
  });
}

// A scenario passes when it ran at least one check and none failed.
export const scenarioPassed = (r) => Boolean(r && r.failed === 0 && r.passed > 0);
