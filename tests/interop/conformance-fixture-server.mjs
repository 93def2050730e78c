// The fixtures the official conformance suite's server scenarios call (tools,
// resources, prompts with the names and results they expect), written with
// the TS SDK's low-level Server, served one of two ways:
//   --transport sse         legacy HTTP+SSE (GET /sse + POST /message), for the bridge
//   --transport streamable  Streamable HTTP on /mcp (stateful), the direct baseline
// Binds 127.0.0.1 port 0; prints "LISTENING <port>"; exits when stdin closes.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { serveLegacySse } from './helpers.mjs';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  CallToolRequestSchema, CompleteRequestSchema, GetPromptRequestSchema, ListPromptsRequestSchema,
  ListResourcesRequestSchema, ListResourceTemplatesRequestSchema, ListToolsRequestSchema,
  ReadResourceRequestSchema, SubscribeRequestSchema, UnsubscribeRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';
import { tools, toolResult, resourceList, resourceTemplates, readFixtureResource, promptList, getFixturePrompt }
  from './conformance-fixture-data.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const text = (t) => ({ content: [{ type: 'text', text: t }] });

function makeServer() {
  const server = new Server({ name: 'conformance-fixtures', version: '1.0.0' }, {
    capabilities: { tools: {}, logging: {}, completions: {}, prompts: {},
                    resources: { subscribe: true } },
  });
  const elicit = async (params) => server.elicitInput(params);
  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools }));
  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    const args = req.params.arguments ?? {};
    switch (req.params.name) {
      case 'test_tool_with_logging':
        for (const [i, m] of ['Tool execution started', 'Tool processing data', 'Tool execution completed'].entries()) {
          if (i) await sleep(50);
          await server.sendLoggingMessage({ level: 'info', data: m }, extra.sessionId);
        }
        return text('Tool with logging executed successfully');
      case 'test_tool_with_progress': {
        const token = req.params._meta?.progressToken;
        for (const [i, p] of [0, 50, 100].entries()) {
          if (i) await sleep(50);
          if (token !== undefined) {
            await extra.sendNotification({ method: 'notifications/progress',
              params: { progressToken: token, progress: p, total: 100 } });
          }
        }
        return text('Tool with progress executed successfully');
      }
      case 'test_sampling': {
        const r = await server.createMessage({
          messages: [{ role: 'user', content: { type: 'text', text: String(args.prompt) } }], maxTokens: 100 });
        return text(`LLM response: ${r.content?.text ?? JSON.stringify(r.content)}`);
      }
      case 'test_elicitation': {
        const r = await elicit({ message: String(args.message), requestedSchema: { type: 'object',
          properties: { username: { type: 'string', description: "User's response" },
                        email: { type: 'string', description: "User's email address" } },
          required: ['username', 'email'] } });
        return text(`User response: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`);
      }
      case 'test_elicitation_sep1034_defaults': {
        const r = await elicit({ message: 'Please review the defaults', requestedSchema: { type: 'object',
          properties: {
            name: { type: 'string', default: 'John Doe' }, age: { type: 'integer', default: 30 },
            score: { type: 'number', default: 95.5 },
            status: { type: 'string', enum: ['active', 'inactive', 'pending'], default: 'active' },
            verified: { type: 'boolean', default: true } } } });
        return text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`);
      }
      case 'test_elicitation_sep1330_enums': {
        const r = await elicit({ message: 'Pick options', requestedSchema: { type: 'object', properties: {
          untitledSingle: { type: 'string', enum: ['option1', 'option2', 'option3'] },
          titledSingle: { type: 'string', oneOf: [{ const: 'value1', title: 'First Option' },
            { const: 'value2', title: 'Second Option' }, { const: 'value3', title: 'Third Option' }] },
          legacyEnum: { type: 'string', enum: ['opt1', 'opt2', 'opt3'],
            enumNames: ['Option One', 'Option Two', 'Option Three'] },
          untitledMulti: { type: 'array', items: { type: 'string', enum: ['option1', 'option2', 'option3'] } },
          titledMulti: { type: 'array', items: { anyOf: [{ const: 'value1', title: 'First Choice' },
            { const: 'value2', title: 'Second Choice' }, { const: 'value3', title: 'Third Choice' }] } },
        } } });
        return text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`);
      }
      default: return toolResult(req.params.name, args);
    }
  });
  server.setRequestHandler(ListResourcesRequestSchema, async () => ({ resources: resourceList }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({ resourceTemplates }));
  server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
    const r = readFixtureResource(req.params.uri);
    if (!r) throw new Error(`Unknown resource ${req.params.uri}`);
    return r;
  });
  server.setRequestHandler(SubscribeRequestSchema, async () => ({}));
  server.setRequestHandler(UnsubscribeRequestSchema, async () => ({}));
  server.setRequestHandler(ListPromptsRequestSchema, async () => ({ prompts: promptList }));
  server.setRequestHandler(GetPromptRequestSchema, async (req) =>
    getFixturePrompt(req.params.name, req.params.arguments ?? {}));
  server.setRequestHandler(CompleteRequestSchema, async () => ({ completion: { values: [], total: 0, hasMore: false } }));
  return server;
}

const mode = process.argv[process.argv.indexOf('--transport') + 1];
const sse = new Map();
const streamable = new Map();
let port = 0;

async function readJson(req) {
  let body = '';
  for await (const c of req) body += c;
  return JSON.parse(body);
}

const httpServer = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  try {
    if (mode === 'sse') {
      if (await serveLegacySse(req, res, url, sse, (t) => makeServer().connect(t))) return;
    } else if (url.pathname === '/mcp') {
      const sid = req.headers['mcp-session-id'];
      let t = sid ? streamable.get(sid) : undefined;
      const body = req.method === 'POST' ? await readJson(req) : undefined;
      if (!t) {
        if (req.method !== 'POST' || body?.method !== 'initialize') {
          res.writeHead(sid ? 404 : 400, { 'content-type': 'application/json' }).end(JSON.stringify(
            { jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Bad Request: no valid session' } }));
          return;
        }
        t = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => streamable.set(id, t),
          enableDnsRebindingProtection: true,
          allowedHosts: ['127.0.0.1', 'localhost', '[::1]', `127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`],
        });
        t.onclose = () => { if (t.sessionId) streamable.delete(t.sessionId); };
        await makeServer().connect(t);
      }
      await t.handleRequest(req, res, body);
      return;
    }
    res.writeHead(404).end();
  } catch (e) {
    if (!res.headersSent) res.writeHead(500).end(String(e));
  }
});

httpServer.listen(0, '127.0.0.1', () => {
  port = httpServer.address().port;
  process.stdout.write(`LISTENING ${port}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();
