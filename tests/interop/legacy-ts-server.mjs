// A legacy HTTP+SSE (2024-11-05) MCP server built with the official TS SDK
// (SSEServerTransport), for interop tests. One McpServer per SSE session.
//
// Control endpoints for fault injection (test use only, loopback only):
//   POST /control/kill-streams  destroys every open SSE stream's socket
//   POST /control/blackhole?on=1|0  tools/call POSTs get 202 and are dropped
//   GET  /control/stats  {cancelled, sessions, running (slow/progress calls in
//                        progress), progressSent (progress notifications sent)}
// Prints "LISTENING <port>" on stdout once ready. Exits when stdin closes.
// LEGACY_SERVER_PORT=<n> listens on that port (default: any free port), so that a killed
// server can be started again where the bridge expects it.
import http from 'node:http';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { z } from 'zod';

const transports = new Map();
const streams = new Set();
let blackhole = false;
const stats = { cancelled: 0, sessions: 0, running: 0, progressSent: 0 };

function makeServer() {
  const server = new McpServer({ name: 'ts-legacy-server', version: '1.0.0' },
    { capabilities: { logging: {} } });
  server.registerTool('echo', { description: 'echo', inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }));
  server.registerTool('add', { description: 'add', inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }));
  server.registerTool('slow', { description: 'sleeps ms', inputSchema: { ms: z.number() } },
    async ({ ms }, extra) => {
      stats.running++;
      try {
        await new Promise((resolve) => {
          const t = setTimeout(resolve, ms);
          extra.signal.addEventListener('abort', () => { clearTimeout(t); stats.cancelled++; resolve(); });
        });
      } finally { stats.running--; }
      return { content: [{ type: 'text', text: `slept ${ms}` }] };
    });
  server.registerTool('progress', { description: 'reports `steps` progress notifications',
    inputSchema: { steps: z.number(), ms: z.number() } },
    async ({ steps, ms }, extra) => {
      const token = extra._meta?.progressToken;
      stats.running++;
      try {
        for (let i = 1; i <= steps; i++) {
          await new Promise((r) => setTimeout(r, ms));
          if (token !== undefined) {
            await extra.sendNotification({ method: 'notifications/progress',
              params: { progressToken: token, progress: i, total: steps, message: `step ${i}` } });
            stats.progressSent++;
          }
        }
      } finally { stats.running--; }
      return { content: [{ type: 'text', text: `done ${steps}` }] };
    });
  server.registerTool('log', { description: 'logs at two levels',
    inputSchema: { text: z.string() } },
    async ({ text }, extra) => {
      for (const level of ['debug', 'info', 'warning', 'error']) {
        await server.server.sendLoggingMessage({ level, logger: 'interop', data: `${level}: ${text}` },
          extra.sessionId);
      }
      return { content: [{ type: 'text', text: 'logged' }] };
    });
  server.registerTool('sample', { description: 'asks the client to sample',
    inputSchema: { prompt: z.string(), delay: z.number().optional() } },
    async ({ prompt, delay }) => {
      if (delay) await new Promise((r) => setTimeout(r, delay));
      const r = await server.server.createMessage({
        messages: [{ role: 'user', content: { type: 'text', text: prompt } }], maxTokens: 16 });
      return { content: [{ type: 'text', text: `model ${r.model} said: ${r.content.text}` }] };
    });
  server.registerTool('roots', { description: 'lists the client roots', inputSchema: {} },
    async () => {
      const r = await server.server.listRoots();
      return { content: [{ type: 'text', text: r.roots.map((x) => x.uri).join(',') }] };
    });
  server.registerTool('fail', { description: 'returns a tool error', inputSchema: { why: z.string() } },
    async ({ why }) => ({ isError: true, content: [{ type: 'text', text: `failed: ${why}` }] }));
  server.registerTool('big', { description: 'returns `bytes` bytes of text', inputSchema: { bytes: z.number() } },
    async ({ bytes }) => ({ content: [{ type: 'text', text: 'y'.repeat(bytes) }] }));
  return server;
}

const httpServer = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  try {
    if (req.method === 'GET' && url.pathname === '/sse') {
      const transport = new SSEServerTransport('/message', res);
      transports.set(transport.sessionId, transport);
      streams.add(res);
      stats.sessions++;
      res.on('close', () => { transports.delete(transport.sessionId); streams.delete(res); });
      await makeServer().connect(transport);
      return;
    }
    if (req.method === 'POST' && url.pathname === '/message') {
      const transport = transports.get(url.searchParams.get('sessionId'));
      if (!transport) { res.writeHead(404).end('Session not found'); return; }
      if (blackhole) {
        let body = '';
        req.on('data', (c) => { body += c; });
        await new Promise((r) => req.on('end', r));
        const msg = JSON.parse(body);
        if (msg.method === 'tools/call') { res.writeHead(202).end('Accepted'); return; }
        await transport.handlePostMessage(req, res, msg);
        return;
      }
      await transport.handlePostMessage(req, res);
      return;
    }
    if (req.method === 'POST' && url.pathname === '/control/kill-streams') {
      const n = streams.size;
      for (const s of streams) s.socket?.destroy();
      res.writeHead(200).end(String(n));
      return;
    }
    if (req.method === 'GET' && url.pathname === '/control/stats') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats));
      return;
    }
    if (req.method === 'POST' && url.pathname === '/control/blackhole') {
      blackhole = url.searchParams.get('on') === '1';
      res.writeHead(200).end(String(blackhole));
      return;
    }
    res.writeHead(404).end();
  } catch (e) {
    if (!res.headersSent) res.writeHead(500).end(String(e));
  }
});

httpServer.listen(Number(process.env.LEGACY_SERVER_PORT ?? 0), '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${httpServer.address().port}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();  // never outlive a run
