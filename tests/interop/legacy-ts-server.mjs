// A legacy HTTP+SSE (2024-11-05) MCP server built with the official TS SDK
// (SSEServerTransport), for interop tests. One McpServer per SSE session.
//
// Control endpoints for fault injection (test use only, loopback only):
//   POST /control/kill-streams  destroys every open SSE stream's socket
//   POST /control/blackhole?on=1|0  tools/call POSTs get 202 and are dropped
// Prints "LISTENING <port>" on stdout once ready. Exits when stdin closes.
import http from 'node:http';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { z } from 'zod';

const transports = new Map();
const streams = new Set();
let blackhole = false;

function makeServer() {
  const server = new McpServer({ name: 'ts-legacy-server', version: '1.0.0' });
  server.registerTool('echo', { description: 'echo', inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }));
  server.registerTool('add', { description: 'add', inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }));
  server.registerTool('slow', { description: 'sleeps ms', inputSchema: { ms: z.number() } },
    async ({ ms }, extra) => {
      await new Promise((resolve) => {
        const t = setTimeout(resolve, ms);
        extra.signal.addEventListener('abort', () => { clearTimeout(t); resolve(); });
      });
      return { content: [{ type: 'text', text: `slept ${ms}` }] };
    });
  return server;
}

const httpServer = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  try {
    if (req.method === 'GET' && url.pathname === '/sse') {
      const transport = new SSEServerTransport('/message', res);
      transports.set(transport.sessionId, transport);
      streams.add(res);
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

httpServer.listen(0, '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${httpServer.address().port}\n`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();  // never outlive a run
