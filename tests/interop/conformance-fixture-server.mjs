// The fixtures the official conformance suite's server scenarios call (tools,
// resources, prompts with the names and results they expect), written with
// the TS SDK's low-level Server, served one of two ways:
//   --transport sse         legacy HTTP+SSE (GET /sse + POST /message), for the bridge
//   --transport streamable  Streamable HTTP on /mcp (stateful), the direct baseline
// Binds 127.0.0.1 port 0; prints "LISTENING <port>"; exits when stdin closes.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  CallToolRequestSchema, CompleteRequestSchema, GetPromptRequestSchema, ListPromptsRequestSchema,
  ListResourcesRequestSchema, ListResourceTemplatesRequestSchema, ListToolsRequestSchema,
  ReadResourceRequestSchema, SubscribeRequestSchema, UnsubscribeRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';

const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
// 44-byte WAV header with no samples.
const WAV = Buffer.from('RIFF$\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0\x02\0\x10\0data\0\0\0\0', 'latin1').toString('base64');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const text = (t) => ({ content: [{ type: 'text', text: t }] });
const noArgs = { type: 'object', properties: {} };

const tools = [
  { name: 'test_simple_text', description: 'Returns simple text', inputSchema: noArgs },
  { name: 'test_image_content', description: 'Returns an image', inputSchema: noArgs },
  { name: 'test_audio_content', description: 'Returns audio', inputSchema: noArgs },
  { name: 'test_embedded_resource', description: 'Returns an embedded resource', inputSchema: noArgs },
  { name: 'test_multiple_content_types', description: 'Returns mixed content', inputSchema: noArgs },
  { name: 'test_tool_with_logging', description: 'Logs while running', inputSchema: noArgs },
  { name: 'test_tool_with_progress', description: 'Reports progress', inputSchema: noArgs },
  { name: 'test_error_handling', description: 'Always fails', inputSchema: noArgs },
  { name: 'test_sampling', description: 'Asks the client to sample',
    inputSchema: { type: 'object', properties: { prompt: { type: 'string' } }, required: ['prompt'] } },
  { name: 'test_elicitation', description: 'Asks the user',
    inputSchema: { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] } },
  { name: 'test_elicitation_sep1034_defaults', description: 'Elicitation with defaults', inputSchema: noArgs },
  { name: 'test_elicitation_sep1330_enums', description: 'Elicitation with enums', inputSchema: noArgs },
  { name: 'json_schema_2020_12_tool', description: 'Tool with JSON Schema 2020-12 features',
    inputSchema: {
      $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object',
      $defs: { address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } } },
      properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
      additionalProperties: false,
    } },
];

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
      case 'test_simple_text': return text('This is a simple text response for testing.');
      case 'test_image_content': return { content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] };
      case 'test_audio_content': return { content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] };
      case 'test_embedded_resource':
        return { content: [{ type: 'resource', resource: { uri: 'test://embedded-resource',
          mimeType: 'text/plain', text: 'This is an embedded resource content.' } }] };
      case 'test_multiple_content_types':
        return { content: [
          { type: 'text', text: 'Multiple content types test:' },
          { type: 'image', data: PNG, mimeType: 'image/png' },
          { type: 'resource', resource: { uri: 'test://mixed-content-resource', mimeType: 'application/json',
            text: JSON.stringify({ test: 'data', value: 123 }) } }] };
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
      case 'test_error_handling':
        return { isError: true, content: [{ type: 'text', text: 'This tool intentionally returns an error for testing' }] };
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
      case 'json_schema_2020_12_tool': return text(`ok: ${JSON.stringify(args)}`);
      default: return { isError: true, content: [{ type: 'text', text: `Unknown tool ${req.params.name}` }] };
    }
  });
  server.setRequestHandler(ListResourcesRequestSchema, async () => ({ resources: [
    { uri: 'test://static-text', name: 'static-text', description: 'A static text resource', mimeType: 'text/plain' },
    { uri: 'test://static-binary', name: 'static-binary', description: 'A static binary resource', mimeType: 'image/png' },
    { uri: 'test://watched-resource', name: 'watched-resource', description: 'A resource to subscribe to', mimeType: 'text/plain' },
  ] }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({ resourceTemplates: [
    { uriTemplate: 'test://template/{id}/data', name: 'template', description: 'Templated data', mimeType: 'application/json' },
  ] }));
  server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
    const uri = req.params.uri;
    if (uri === 'test://static-text') {
      return { contents: [{ uri, mimeType: 'text/plain', text: 'This is the content of the static text resource.' }] };
    }
    if (uri === 'test://static-binary') return { contents: [{ uri, mimeType: 'image/png', blob: PNG }] };
    if (uri === 'test://watched-resource') return { contents: [{ uri, mimeType: 'text/plain', text: 'watched' }] };
    const m = uri.match(/^test:\/\/template\/([^/]+)\/data$/);
    if (m) {
      return { contents: [{ uri, mimeType: 'application/json',
        text: JSON.stringify({ id: m[1], templateTest: true, data: `Data for ID: ${m[1]}` }) }] };
    }
    throw new Error(`Unknown resource ${uri}`);
  });
  server.setRequestHandler(SubscribeRequestSchema, async () => ({}));
  server.setRequestHandler(UnsubscribeRequestSchema, async () => ({}));
  server.setRequestHandler(ListPromptsRequestSchema, async () => ({ prompts: [
    { name: 'test_simple_prompt', description: 'A simple prompt' },
    { name: 'test_prompt_with_arguments', description: 'A prompt with arguments',
      arguments: [{ name: 'arg1', description: 'First test argument', required: true },
                  { name: 'arg2', description: 'Second test argument', required: true }] },
    { name: 'test_prompt_with_embedded_resource', description: 'A prompt with a resource',
      arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }] },
    { name: 'test_prompt_with_image', description: 'A prompt with an image' },
  ] }));
  server.setRequestHandler(GetPromptRequestSchema, async (req) => {
    const a = req.params.arguments ?? {};
    const user = (content) => ({ role: 'user', content });
    switch (req.params.name) {
      case 'test_simple_prompt':
        return { messages: [user({ type: 'text', text: 'This is a simple prompt for testing.' })] };
      case 'test_prompt_with_arguments':
        return { messages: [user({ type: 'text', text: `Prompt with arguments: arg1='${a.arg1}', arg2='${a.arg2}'` })] };
      case 'test_prompt_with_embedded_resource':
        return { messages: [
          user({ type: 'resource', resource: { uri: a.resourceUri, mimeType: 'text/plain',
            text: 'Embedded resource content for testing.' } }),
          user({ type: 'text', text: 'Please process the embedded resource above.' })] };
      case 'test_prompt_with_image':
        return { messages: [user({ type: 'image', data: PNG, mimeType: 'image/png' }),
          user({ type: 'text', text: 'Please analyze the image above.' })] };
      default: throw new Error(`Unknown prompt ${req.params.name}`);
    }
  });
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
      if (req.method === 'GET' && url.pathname === '/sse') {
        const t = new SSEServerTransport('/message', res);
        sse.set(t.sessionId, t);
        res.on('close', () => sse.delete(t.sessionId));
        await makeServer().connect(t);
        return;
      }
      if (req.method === 'POST' && url.pathname === '/message') {
        const t = sse.get(url.searchParams.get('sessionId'));
        if (!t) { res.writeHead(404).end('Session not found'); return; }
        await t.handlePostMessage(req, res);
        return;
      }
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
