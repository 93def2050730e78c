// Drives a stdio MCP peer (mcp-remote) with JSON-RPC lines: requests with
// bounded waits, notifications collected.
import { launch } from './lib.mjs';

export function stdioPeer(cmd, args, opts) {
  const p = launch(cmd, args, opts);
  const pending = new Map();
  const notifications = [];
  const others = [];
  let buf = '';
  let nextId = 1;
  p.child.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      let msg;
      try { msg = JSON.parse(line); } catch { others.push(line); continue; }
      msg.at = performance.now();
      if (msg.id !== undefined && msg.method === undefined && pending.has(msg.id)) {
        pending.get(msg.id)(msg);
        pending.delete(msg.id);
      } else if (msg.method !== undefined && msg.id === undefined) {
        notifications.push(msg);
      } else {
        others.push(msg);
        // A server->client request (e.g. ping) gets an empty result.
        if (msg.method !== undefined) p.child.stdin.write(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result: {} }) + '\n');
      }
    }
  });
  p.exited.then(() => { for (const [, r] of pending) r({ closed: true }); pending.clear(); });

  // Resolves with the JSON-RPC response (result or error) or rejects on timeout.
  p.request = (method, params, timeoutMs = 10000) => {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => { pending.delete(id); reject(new Error(`${method} (id ${id}): no answer within ${timeoutMs} ms; stderr:\n${p.stderr}`)); }, timeoutMs);
      pending.set(id, (m) => { clearTimeout(t); resolve(m); });
      p.child.stdin.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  };
  p.notify = (method, params) => p.child.stdin.write(JSON.stringify({ jsonrpc: '2.0', method, params }) + '\n');
  p.notifications = notifications;
  p.others = others;
  return p;
}
