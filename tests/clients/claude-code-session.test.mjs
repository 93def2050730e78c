// Claude Code (the pinned native CLI) against the bridge in session mode
// (--upstream-mode session, #13): `claude mcp get` says Connected, and a
// `claude -p` run whose scripted model calls two tools runs both calls on
// its client session's one upstream session (one upstream connect per
// client session, initialize included). Same isolation as claude-code.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { claudeBin, startClaudeRig, showRun as show, run } from './lib.mjs';
import { planner, textOf } from './fake-anthropic.mjs';

const NAME = 'bridge';
const tool = (t) => `mcp__${NAME}__${t}`;

let rig, upstream, bridge, home, fake, env;
let script = async () => [{ type: 'text', text: 'FAKE-MODEL: no script' }];

before(async () => {
  rig = await startClaudeRig({ bridgeArgs: ['--upstream-mode', 'session'], homePrefix: 'claude-session-',
                               toolPrefix: `mcp__${NAME}__`, script: (body, ctx) => script(body, ctx) });
  ({ upstream, bridge, home, fake, env } = rig);
});

after(async () => {
  await rig?.stop();
  if (fake) console.log(`# requests aimed beyond 127.0.0.1 (refused by the fake proxy): ${JSON.stringify(fake.escapes)}`);
});

const claude = (args, timeoutMs = 60000) => run(claudeBin, args, { env, cwd: home.dir, timeoutMs });
const initializedSessions = () => bridge.output().split('\n').filter((l) => /client session initialized/.test(l)).length;

test('session mode: claude mcp add + get: Connected', async () => {
  const add = await claude(['mcp', 'add', '--transport', 'http', '--scope', 'user', NAME, bridge.url]);
  assert.equal(add.code, 0, show(add));
  const get = await claude(['mcp', 'get', NAME]);
  assert.equal(get.code, 0, show(get));
  assert.match(get.stdout, /Status:\s*✔\s*Connected/, show(get));
});

test('session mode: claude -p runs two calls on its session\'s one upstream session', async () => {
  const sessionsBefore = (await upstream.stats()).sessions;
  const clientSessionsBefore = initializedSessions();
  script = planner([{ tool: tool('add'), input: { a: 2, b: 3 } }, { tool: tool('echo'), input: { text: 'same session' } }],
    (results) => `FAKE-MODEL: add -> ${textOf(results[0]?.result?.content)}; echo -> ${textOf(results[1]?.result?.content)}`);
  const r = await claude(['-p', 'Add 2 and 3, then echo.', '--allowedTools', `${tool('add')},${tool('echo')}`], 90000);
  assert.equal(r.code, 0, show(r));
  assert.match(r.stdout, /FAKE-MODEL: add -> 5; echo -> same session/, show(r));
  const clientSessions = initializedSessions() - clientSessionsBefore;
  const upstreamSessions = (await upstream.stats()).sessions - sessionsBefore;
  const streams = bridge.output().split('\n').filter((l) => /standalone stream opened/.test(l)).length;
  console.log(`# claude -p: ${clientSessions} client session(s), ${upstreamSessions} upstream session(s), GET streams so far: ${streams}`);
  assert.ok(clientSessions >= 1);
  // One upstream connect per client session: initialize and both calls share it.
  assert.equal(upstreamSessions, clientSessions);
  const calls = bridge.output().split('\n').filter((l) => / call /.test(l) && /method=tools\/call/.test(l)).slice(-2);
  const up = calls.map((l) => l.match(/upstream_session="?([^"\s]+)/)?.[1]);
  assert.ok(up[0] && up[0] === up[1], `both calls on one upstream session: ${JSON.stringify(calls)}`);
});
