// Claude Code (the native CLI from @anthropic-ai/claude-code, pinned) against
// the bridge: `claude mcp add --transport http`, `claude mcp get` (a live
// connection check: it must say Connected), then `claude -p` with a scripted
// model (fake-anthropic.mjs) that loads the bridged tools with ToolSearch and
// calls them, as a real model does with tool search on (the default).
// Claude Code -> bridge -> legacy TS SDK SSE server.
//
// Nothing leaves 127.0.0.1: run-isolated.sh puts the test in a network
// namespace with only loopback; HTTPS_PROXY/HTTP_PROXY point at the fake API
// server, which refuses and records any request aimed elsewhere; nonessential
// traffic, telemetry, error reporting and the autoupdater are off; HOME is a
// scratch directory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { claudeBin, startClaudeRig, showRun as show, run, launch, stop, timeoutAfter, bridgeCalls } from './lib.mjs';
import { planner, textOf } from './fake-anthropic.mjs';

const NAME = 'bridge';
const tool = (t) => `mcp__${NAME}__${t}`;

let rig, upstream, bridge, home, fake, env;
let script = async () => [{ type: 'text', text: 'FAKE-MODEL: no script' }];

before(async () => {
  rig = await startClaudeRig({ homePrefix: 'claude-', toolPrefix: `mcp__${NAME}__`,
                               script: (body, ctx) => script(body, ctx) });
  ({ upstream, bridge, home, fake, env } = rig);
});

after(async () => {
  await rig?.stop();
  if (!fake) return;
  const other = fake.log.filter((l) => !(l.method === 'POST' && l.path === '/v1/messages' && l.agentTurn));
  console.log(`# fake Messages API: ${fake.turns.length} agent turns; other requests: ${
    JSON.stringify(other.map((l) => `${l.method} ${l.path}${l.model ? ` (${l.model})` : ''}`))}`);
  console.log(`# requests aimed beyond 127.0.0.1 (refused by the fake proxy): ${JSON.stringify(fake.escapes)}`);
});

const claude = (args, timeoutMs = 60000) => run(claudeBin, args, { env, cwd: home.dir, timeoutMs });

test('claude mcp add + claude mcp get: Connected', async () => {
  const add = await claude(['mcp', 'add', '--transport', 'http', '--scope', 'user', NAME, bridge.url]);
  assert.equal(add.code, 0, show(add));
  const get = await claude(['mcp', 'get', NAME]);
  console.log(`# claude mcp get: ${get.stdout.split('\n').find((l) => /Status/.test(l))?.trim()} (${get.ms.toFixed(0)} ms)`);
  assert.equal(get.code, 0, show(get));
  assert.match(get.stdout, /Status:\s*✔\s*Connected/, show(get));
});

test('claude -p: lists the bridged tools, calls add (2+3) and prints the answer', async () => {
  const turnsBefore = fake.turns.length;
  script = planner([{ tool: tool('add'), input: { a: 2, b: 3 } }],
    (results) => `FAKE-MODEL: the bridged add tool returned ${textOf(results[0]?.result?.content)}`);
  const r = await claude(['-p', 'Use the bridge tool to add 2 and 3.', '--allowedTools', tool('add')], 90000);
  const turns = fake.turns.slice(turnsBefore);
  assert.ok(turns.length > 0, `no agent turn reached the fake API; ${show(r)}\nlog: ${JSON.stringify(fake.log)}`);
  // list: the bridged tools were known to Claude Code (deferred names or full schemas)
  const first = JSON.stringify(turns[0].body);
  for (const t of ['add', 'slow', 'progress']) assert.ok(first.includes(tool(t)), `${tool(t)} offered to the model`);
  // call: the tool_result the model got is "5", not an error
  const last = turns.at(-1).body.messages.at(-1).content.find((b) => b.type === 'tool_result');
  assert.ok(last, `no tool_result in the last turn; ${show(r)}`);
  assert.equal(textOf(last.content), '5', JSON.stringify(last));
  assert.notEqual(last.is_error, true);
  assert.equal(r.code, 0, show(r));
  assert.match(r.stdout, /FAKE-MODEL: the bridged add tool returned 5/, show(r));
});

test('claude -p: a call with progress (notifications are not shown in -p mode)', async () => {
  const before = (await upstream.stats()).progressSent;
  script = planner([{ tool: tool('progress'), input: { steps: 3, ms: 100 } }],
    (results) => `FAKE-MODEL: progress tool said ${textOf(results[0]?.result?.content)}`);
  const r = await claude(['-p', 'Run the bridge progress tool.', '--allowedTools', tool('progress')], 90000);
  assert.equal(r.code, 0, show(r));
  assert.match(r.stdout, /FAKE-MODEL: progress tool said done 3/, show(r));
  const sent = (await upstream.stats()).progressSent - before;
  console.log(`# progress notifications the upstream sent for Claude Code's call: ${sent}`);
  // Claude Code sends a progressToken with its tool calls: the upstream then
  // reports progress, and the notifications cross the bridge on the call's stream.
  assert.equal(sent, 3);
});

test('claude -p: upstream killed mid-call -> the model gets an error within seconds; the next call in the same session works', async () => {
  let t0;
  let back;
  const upstreamBack = new Promise((r) => { back = r; });
  script = planner([
    { tool: tool('slow'), input: { ms: 30000 } },
    { tool: tool('add'), input: { a: 40, b: 2 }, before: () => upstreamBack },
  ], (results) => `FAKE-MODEL: slow -> [${textOf(results[0]?.result?.content)}]; add -> [${textOf(results[1]?.result?.content)}]`);
  const p = launch(claudeBin, ['-p', 'Run the bridge slow tool, then add 40 and 2.',
    '--allowedTools', `${tool('slow')},${tool('add')}`], { env, cwd: home.dir });
  const done = Promise.race([p.exited, timeoutAfter(90000)]);
  try {
    await Promise.race([upstream.waitRunning(60000), p.exited.then(() => {
      throw new Error(`claude -p ended before the slow call started\nstdout:\n${p.stdout}\nstderr:\n${p.stderr}`);
    })]);
    t0 = performance.now();
    await upstream.kill();
    await upstream.restart();
    back();
    const exit = await done;
    assert.notEqual(exit, 'timeout', `claude -p did not finish; stdout:\n${p.stdout}\nstderr:\n${p.stderr}`);
  } finally {
    back();
    await stop(p.child);
  }
  const turn = fake.turns.find((t) => t.at > t0);
  assert.ok(turn, 'the model was called again after the kill');
  const tr = turn.body.messages.at(-1).content.find((b) => b.type === 'tool_result');
  const ms = turn.at - t0;
  console.log(`# upstream killed -> tool_result reached the model in ${ms.toFixed(0)} ms: is_error=${tr?.is_error} ${textOf(tr?.content)}`);
  console.log(`# claude -p printed: ${p.stdout.trim()}`);
  assert.equal(tr?.is_error, true, JSON.stringify(tr));
  assert.match(textOf(tr.content), /upstream closed/);
  assert.ok(ms < 3000, `the error reached the model ${ms} ms after the kill`);
  // same client session: the bridge saw the failed slow call and the next add
  // call under one client session (no reconnect, no new initialize)
  const calls = bridgeCalls(bridge).filter((c) => c.method === 'tools/call');
  console.log(`# bridge calls: ${JSON.stringify(calls.slice(-2))}`);
  const [slowCall, addCall] = calls.slice(-2);
  assert.ok(slowCall && addCall && slowCall.session === addCall.session, `one session: ${JSON.stringify(calls)}`);
  assert.notEqual(slowCall.outcome, 'ok');
  assert.equal(addCall.outcome, 'ok');
  // what the user sees: the model's answer, built from both tool results
  assert.match(p.stdout, /FAKE-MODEL: slow -> \[[^\]]*upstream closed[^\]]*\]; add -> \[42\]/, p.stdout + p.stderr);
});

test('claude mcp get while the upstream is down names the cause; Connected again once it is back', async () => {
  await upstream.kill();
  try {
    const down = await claude(['mcp', 'get', NAME]);
    console.log(`# upstream down: ${down.stdout.split('\n').filter((l) => /Status|Issue/.test(l)).map((l) => l.trim()).join(' | ')} (${down.ms.toFixed(0)} ms)`);
    // What the user sees must be the real cause, not a bare status code.
    assert.match(down.stdout, /upstream unreachable/, show(down));
    assert.ok(down.ms < 10000, `claude mcp get took ${down.ms} ms`);
  } finally {
    await upstream.restart();
  }
  const up = await claude(['mcp', 'get', NAME]);
  assert.match(up.stdout, /Status:\s*✔\s*Connected/, show(up));
});
