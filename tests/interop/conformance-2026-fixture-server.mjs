// The fixtures the official conformance suite's 2026-07-28 server scenarios
// call (the tools, resources and prompts of the suite's reference server,
// with the names and results the scenarios expect), written once with the TS
// SDK v2 low-level Server and served one of two ways:
//   --transport modern   Streamable HTTP on /mcp through the SDK v2's
//                        createMcpHandler: 2026-07-28 (stateless, per-request
//                        _meta, server/discover, input_required), the direct
//                        baseline
//   --transport sse      legacy HTTP+SSE (GET /sse + POST /message, 2024-11-05
//                        wire), for the bridge. The same handlers: the SDK's
//                        legacy shim turns each input_required they return
//                        into real server-to-client requests mid-call
//                        (elicitation/create, sampling/createMessage,
//                        roots/list), which the bridge must turn into MRTR.
// Binds 127.0.0.1 port 0; prints "LISTENING <port>"; exits when stdin closes.
import http from 'node:http';
import { createHmac, randomUUID } from 'node:crypto';
import {
  Server, createMcpHandler, inputRequired, inputResponse, ProtocolError,
  MissingRequiredClientCapabilityError, validateHostHeader, localhostAllowedHostnames,
} from '@modelcontextprotocol/server';
import { serveLegacySse } from './helpers.mjs';
import { tools as sessionEraTools, promptList, resourceList, resourceTemplates, readFixtureResource,
  getFixturePrompt, toolResult } from './conformance-fixture-data.mjs';

const text = (t) => ({ content: [{ type: 'text', text: t }] });
const noArgs = { type: 'object', properties: {} };
const CAPS_KEY = 'io.modelcontextprotocol/clientCapabilities';
const LOG_KEY = 'io.modelcontextprotocol/logLevel';

// requestState integrity (the tampered-state scenario): HMAC over the payload.
const SECRET = randomUUID();
const sign = (payload) => {
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
};
const verify = (state) => {
  const [body, mac] = String(state).split('.');
  if (!body || mac !== createHmac('sha256', SECRET).update(body).digest('base64url')) throw new Error('bad requestState');
  return JSON.parse(Buffer.from(body, 'base64url').toString());
};

const nameSchema = (message) => inputRequired.elicit({ message, requestedSchema: {
  type: 'object', properties: { name: { type: 'string' } }, required: ['name'] } });
const sample = (t, maxTokens) => inputRequired.createMessage({
  messages: [{ role: 'user', content: { type: 'text', text: t } }], maxTokens });
const elicitedText = (responses, key, field) => {
  const v = inputResponse(responses, key);
  return v.kind === 'elicit' ? String(v.content?.[field] ?? '') : undefined;
};

const tools = [
  // The session-era tools whose elicitations have no 2026-07-28 scenario stay out.
  ...sessionEraTools.filter((t) => !t.name.startsWith('test_elicitation_sep')),
  ...['elicitation', 'sampling', 'list_roots', 'request_state', 'multiple_inputs', 'multi_round',
    'tampered_state', 'capabilities'].map((k) => ({
    name: `test_input_required_result_${k}`, description: `MRTR: ${k.replace('_', ' ')}`, inputSchema: noArgs })),
  { name: 'test_missing_capability', description: 'Needs the sampling capability', inputSchema: noArgs },
  { name: 'test_streaming_elicitation', description: 'Streams progress before its result', inputSchema: noArgs },
  { name: 'test_logging_tool', description: 'Logs only when the request set a log level', inputSchema: noArgs },
  { name: 'test_trigger_tool_change', description: 'Announces a tools list change', inputSchema: noArgs },
  { name: 'test_trigger_prompt_change', description: 'Announces a prompts list change', inputSchema: noArgs },
];

// The MRTR tools (2026-07-28 input_required; the legacy shim fulfils them
// with server-to-client requests on the legacy wire). Returns undefined for
// other tools.
function mrtrTool(name, req, ctx, clientCaps) {
  const responses = ctx.mcpReq.inputResponses;
  const state = ctx.mcpReq.requestState();
  switch (name) {
    case 'test_input_required_result_elicitation': {
      const n = elicitedText(responses, 'user_name', 'name');
      if (n === undefined) return inputRequired({ inputRequests: { user_name: nameSchema('What is your name?') } });
      return text(`Hello, ${n}!`);
    }
    case 'test_input_required_result_sampling': {
      const v = inputResponse(responses, 'capital_question');
      if (v.kind !== 'sampling') {
        return inputRequired({ inputRequests: { capital_question: sample('What is the capital of France?', 100) } });
      }
      return text(`Sampling response: ${v.result.content?.text ?? JSON.stringify(v.result.content)}`);
    }
    case 'test_input_required_result_list_roots': {
      const v = inputResponse(responses, 'client_roots');
      if (v.kind !== 'roots') return inputRequired({ inputRequests: { client_roots: inputRequired.listRoots() } });
      return text(`Roots: ${v.roots.map((r) => r.uri).join(', ')}`);
    }
    case 'test_input_required_result_request_state': {
      const v = inputResponse(responses, 'confirm');
      if (v.kind !== 'elicit' || !state) {
        return inputRequired({ requestState: sign({ tool: name }), inputRequests: { confirm: inputRequired.elicit({
          message: 'Please confirm', requestedSchema: { type: 'object', properties: { ok: { type: 'boolean' } },
            required: ['ok'] } }) } });
      }
      if (state.tool !== name) throw new ProtocolError(-32602, 'requestState belongs to another request');
      return text(`state-ok: confirmed=${v.content?.ok}`);
    }
    case 'test_input_required_result_multiple_inputs': {
      const n = elicitedText(responses, 'user_name', 'name');
      const g = inputResponse(responses, 'greeting');
      const r = inputResponse(responses, 'client_roots');
      if (n === undefined || g.kind !== 'sampling' || r.kind !== 'roots' || !state) {
        return inputRequired({ requestState: sign({ tool: name }), inputRequests: {
          user_name: nameSchema('What is your name?'), greeting: sample('Generate a greeting', 50),
          client_roots: inputRequired.listRoots() } });
      }
      return text(`multiple-ok: ${n}, ${g.result.content?.text}, ${r.roots.length} roots`);
    }
    case 'test_input_required_result_multi_round': {
      if (state?.step === 2) {
        const c = elicitedText(responses, 'step2', 'color');
        if (c !== undefined) return text(`multi-round-ok: ${state.name} likes ${c}`);
      }
      const n = elicitedText(responses, 'step1', 'name');
      if (state?.step === 1 && n !== undefined) {
        return inputRequired({ requestState: sign({ tool: name, step: 2, name: n }), inputRequests: {
          step2: inputRequired.elicit({ message: 'Step 2: What is your favorite color?', requestedSchema: {
            type: 'object', properties: { color: { type: 'string' } }, required: ['color'] } }) } });
      }
      return inputRequired({ requestState: sign({ tool: name, step: 1 }),
        inputRequests: { step1: nameSchema('Step 1: What is your name?') } });
    }
    case 'test_input_required_result_tampered_state': {
      if (!state) {
        return inputRequired({ requestState: sign({ tool: name, nonce: randomUUID() }),
          inputRequests: { confirm: nameSchema('Who is asking?') } });
      }
      return text('tampered-state: state verified');
    }
    case 'test_input_required_result_capabilities': {
      if (responses && Object.keys(responses).length > 0) {
        return text(`capabilities-ok: received ${Object.keys(responses).join(',')}`);
      }
      const inputRequests = {};
      if (clientCaps?.elicitation) {
        inputRequests.elicit_input = inputRequired.elicit({ message: 'Elicitation input', requestedSchema: {
          type: 'object', properties: { value: { type: 'string' } }, required: ['value'] } });
      }
      if (clientCaps?.sampling) inputRequests.sample_input = sample('Sample request', 50);
      if (Object.keys(inputRequests).length === 0) return text('No supported capabilities declared');
      return inputRequired({ inputRequests, requestState: sign({ tool: name }) });
    }
    default: return undefined;
  }
}

// notify: {toolsChanged(), promptsChanged()} for this transport.
// Served over legacy SSE, each inputRequests entry becomes a plain
// server-to-client request that carries no key; the bridge then assigns its
// own unless the request names one in params._meta["mcp-sse-bridge/inputKey"]
// (its documented hint; the bridge removes it). The legacy fixture names the
// keys its handlers chose, as a legacy server wanting stable keys would.
function legacyKeyHints(result) {
  if (mode !== 'sse' || !result?.inputRequests) return result;
  const inputRequests = Object.fromEntries(Object.entries(result.inputRequests).map(([key, entry]) => [key,
    { ...entry, params: { ...entry.params, _meta: { ...entry.params?._meta, 'mcp-sse-bridge/inputKey': key } } }]));
  return { ...result, inputRequests };
}

function makeServer(notify) {
  const server = new Server({ name: 'conformance-2026-fixtures', version: '1.0.0' }, {
    capabilities: { tools: { listChanged: true }, prompts: { listChanged: true }, resources: {},
                    completions: {}, logging: {} },
    cacheHints: Object.fromEntries(['tools/list', 'prompts/list', 'resources/list', 'resources/templates/list',
      'resources/read', 'server/discover'].map((m) => [m, { ttlMs: 0, cacheScope: 'private' }])),
    requestState: { verify: (s) => verify(s) },
  });
  // The request's own capabilities (2026-07-28), else the connection's (initialize).
  const capsOf = (ctx) => ctx.mcpReq.envelope?.[CAPS_KEY] ?? server.getClientCapabilities();
  server.setRequestHandler('tools/list', async () => ({ tools }));
  server.setRequestHandler('tools/call', async (req, ctx) => {
    const name = req.params.name;
    const args = req.params.arguments ?? {};
    const caps = capsOf(ctx);
    const mrtr = mrtrTool(name, req, ctx, caps);
    if (mrtr) return legacyKeyHints(mrtr);
    switch (name) {
      case 'test_tool_with_logging':
        for (const m of ['Tool execution started', 'Tool processing data', 'Tool execution completed']) {
          await ctx.mcpReq.log('info', m);
        }
        return text('Tool with logging executed successfully');
      case 'test_tool_with_progress': {
        const token = ctx.mcpReq._meta?.progressToken;
        for (const p of [0, 50, 100]) {
          if (token !== undefined) {
            await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken: token, progress: p, total: 100 } });
          }
        }
        return text('Tool with progress executed successfully');
      }
      case 'test_sampling': {
        const v = inputResponse(ctx.mcpReq.inputResponses, 'llm');
        if (v.kind !== 'sampling') return inputRequired({ inputRequests: { llm: sample(String(args.prompt), 100) } });
        return text(`LLM response: ${v.result.content?.text ?? JSON.stringify(v.result.content)}`);
      }
      case 'test_elicitation': {
        const v = inputResponse(ctx.mcpReq.inputResponses, 'user');
        if (v.kind === 'missing') {
          return inputRequired({ inputRequests: { user: inputRequired.elicit({ message: String(args.message),
            requestedSchema: { type: 'object', properties: { username: { type: 'string', description: "User's response" },
              email: { type: 'string', description: "User's email address" } }, required: ['username', 'email'] } }) } });
        }
        return text(`User response: action=${v.action}, content=${JSON.stringify(v.content ?? {})}`);
      }
      case 'test_missing_capability':
        if (!caps?.sampling) throw new MissingRequiredClientCapabilityError({ requiredCapabilities: { sampling: {} } });
        return text('Success');
      case 'test_streaming_elicitation':
        await ctx.mcpReq.notify({ method: 'notifications/progress', params: { progressToken: 'token-abc', progress: 50, total: 100 } });
        return text('Streaming complete');
      case 'test_logging_tool':
        // The SDK drops the message unless the request asked for a log level.
        await ctx.mcpReq.log('info', 'Diagnostic trace logging activated');
        return text('Logging evaluated');
      case 'test_trigger_tool_change': notify.toolsChanged(); return text('Mutation triggered');
      case 'test_trigger_prompt_change': notify.promptsChanged(); return text('Mutation triggered');
      default: return toolResult(name, args);
    }
  });
  server.setRequestHandler('resources/list', async () => ({ resources: resourceList }));
  server.setRequestHandler('resources/templates/list', async () => ({ resourceTemplates }));
  server.setRequestHandler('resources/read', async (req) => {
    const r = readFixtureResource(req.params.uri);
    if (!r) throw new ProtocolError(-32602, `Resource not found: ${req.params.uri}`, { uri: req.params.uri });
    return r;
  });
  server.setRequestHandler('prompts/list', async () => ({ prompts: [...promptList,
    { name: 'test_input_required_result_prompt', description: 'MRTR: a prompt that needs input' }] }));
  server.setRequestHandler('prompts/get', async (req, ctx) => {
    if (req.params.name === 'test_input_required_result_prompt') {
      const c = elicitedText(ctx.mcpReq.inputResponses, 'user_context', 'context');
      if (c === undefined) {
        return inputRequired({ inputRequests: { user_context: inputRequired.elicit({
          message: 'What context should the prompt use?', requestedSchema: { type: 'object',
            properties: { context: { type: 'string' } }, required: ['context'] } }) } });
      }
      return { messages: [{ role: 'user', content: { type: 'text', text: `Prompt with context: ${c}` } }] };
    }
    return getFixturePrompt(req.params.name, req.params.arguments ?? {});
  });
  server.setRequestHandler('completion/complete', async () => ({ completion: { values: [], total: 0, hasMore: false } }));
  return server;
}

const mode = process.argv[process.argv.indexOf('--transport') + 1];
const sse = new Map();
let handler;
const legacyNotify = new Set();  // per SSE connection: its server's list_changed senders
if (mode === 'modern') {
  handler = createMcpHandler(() => makeServer({ toolsChanged: () => handler.notify.toolsChanged(),
    promptsChanged: () => handler.notify.promptsChanged() }));
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks);
}

// DNS rebinding protection (a loopback server): Host and Origin must name loopback.
const loopbackHosts = localhostAllowedHostnames();
function rebinding(req) {
  if (!validateHostHeader(req.headers.host, loopbackHosts).ok) return true;
  const origin = req.headers.origin;
  if (origin === undefined) return false;
  try { return !validateHostHeader(new URL(origin).host, loopbackHosts).ok; } catch { return true; }
}

const httpServer = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  try {
    if (mode === 'sse') {
      const served = await serveLegacySse(req, res, url, sse, (t, stream) => {
        let server;
        const n = { toolsChanged: () => server.sendToolListChanged(), promptsChanged: () => server.sendPromptListChanged() };
        server = makeServer({ toolsChanged: () => { for (const x of legacyNotify) x.toolsChanged(); },
          promptsChanged: () => { for (const x of legacyNotify) x.promptsChanged(); } });
        legacyNotify.add(n);
        stream.on('close', () => legacyNotify.delete(n));
        return server.connect(t);
      });
      if (served) return;
    } else if (url.pathname === '/mcp') {
      if (rebinding(req)) {
        res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify(
          { jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Forbidden: Host or Origin is not loopback' } }));
        return;
      }
      const body = req.method === 'POST' ? await readBody(req) : undefined;
      const ac = new AbortController();
      res.on('close', () => ac.abort());
      const r = await handler.fetch(new Request(`http://${req.headers.host}${req.url}`, {
        method: req.method, headers: req.headers, body, signal: ac.signal }));
      res.writeHead(r.status, Object.fromEntries(r.headers));
      if (r.body) for await (const c of r.body) res.write(c);
      res.end();
      return;
    }
    res.writeHead(404).end();
  } catch (e) {
    if (!res.headersSent) res.writeHead(500).end(String(e));
    else res.end();
  }
});

httpServer.listen(0, '127.0.0.1', () => process.stdout.write(`LISTENING ${httpServer.address().port}\n`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();
