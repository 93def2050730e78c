// A small local stand-in for the Anthropic Messages API, enough for Claude
// Code's `claude -p`: the agent turn (a request whose `tools` include the
// bridged MCP tools) is answered by a scripted model; any other model call
// (title generation, quota check, ...) gets a short text; count_tokens gets a
// count; everything else is logged and answered 404. Streams exactly the event
// sequence of the real API (message_start, content_block_start/delta/stop,
// message_delta, message_stop). Listens on 127.0.0.1 only.
//
// It also answers CONNECT and absolute-URI requests (what a client sends to an
// HTTP(S) proxy) with 403 and records them in `escapes`: the tests point
// HTTPS_PROXY/HTTP_PROXY here, so any attempt to reach the internet is seen and
// refused locally instead of leaving the machine.
import { appendFileSync } from 'node:fs';
import http from 'node:http';

let msgSeq = 0;

function sse(res, events) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache',
                       'request-id': `req_fake_${msgSeq}` });
  for (const [type, data] of events) res.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`);
  res.end();
}

// content: [{type:'text', text}] or [{type:'tool_use', name, input}]
export function messageEvents(model, content) {
  const id = `msg_fake_${++msgSeq}`;
  const hasTool = content.some((c) => c.type === 'tool_use');
  const events = [['message_start', { message: { id, type: 'message', role: 'assistant', model, content: [],
    stop_reason: null, stop_sequence: null,
    usage: { input_tokens: 25, output_tokens: 1, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 } } }]];
  content.forEach((c, index) => {
    if (c.type === 'text') {
      events.push(['content_block_start', { index, content_block: { type: 'text', text: '' } }]);
      events.push(['content_block_delta', { index, delta: { type: 'text_delta', text: c.text } }]);
    } else {
      const toolId = c.id ?? `toolu_fake_${msgSeq}_${index}`;
      events.push(['content_block_start', { index, content_block: { type: 'tool_use', id: toolId, name: c.name, input: {} } }]);
      events.push(['content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: JSON.stringify(c.input) } }]);
    }
    events.push(['content_block_stop', { index }]);
  });
  events.push(['message_delta', { delta: { stop_reason: hasTool ? 'tool_use' : 'end_turn', stop_sequence: null },
    usage: { output_tokens: 12 } }]);
  events.push(['message_stop', {}]);
  return events;
}

function messageJson(model, content) {
  const id = `msg_fake_${++msgSeq}`;
  const hasTool = content.some((c) => c.type === 'tool_use');
  return { id, type: 'message', role: 'assistant', model,
    content: content.map((c, i) => (c.type === 'text' ? { type: 'text', text: c.text }
      : { type: 'tool_use', id: c.id ?? `toolu_fake_${msgSeq}_${i}`, name: c.name, input: c.input })),
    stop_reason: hasTool ? 'tool_use' : 'end_turn', stop_sequence: null,
    usage: { input_tokens: 25, output_tokens: 12, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 } };
}

// The text of a content value (string or blocks), tool_result contents included.
export function textOf(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b) => (b.type === 'text' ? b.text : b.type === 'tool_result' ? textOf(b.content) : '')).join('');
}

// The tool_result blocks of the last user message.
export function lastToolResults(body) {
  const last = body.messages?.at(-1);
  if (last?.role !== 'user' || !Array.isArray(last.content)) return [];
  return last.content.filter((b) => b.type === 'tool_result');
}

// A scripted model, as a real one would act: for each step of `plan`
// ({tool, input, before?}) it loads the tool with ToolSearch when only its name
// is known (deferred), then calls it; when the plan is done it answers
// finalText(results). results[i] = {step, toolUseId, result (the tool_result
// block), at (when it arrived)}. before() may hold the turn (async).
export function planner(plan, finalText) {
  let next = 0;
  let searches = 0;
  const sent = new Map();
  const results = [];
  let seq = 0;
  return async (body) => {
    const now = performance.now();
    for (const tr of lastToolResults(body)) {
      if (sent.has(tr.tool_use_id)) {
        results.push({ ...sent.get(tr.tool_use_id), result: tr, at: now });
        sent.delete(tr.tool_use_id);
      }
    }
    if (next >= plan.length) return [{ type: 'text', text: finalText(results) }];
    const step = plan[next];
    // Loaded: its schema is in `tools` (ToolSearch adds it there, marked
    // defer_loading, and answers with a tool_reference to it).
    const loaded = body.tools.some((t) => t.name === step.tool && t.input_schema);
    if (!loaded) {
      if (++searches > 3 * plan.length) {
        return [{ type: 'text', text: `FAKE-MODEL: ${step.tool} never became callable` }];
      }
      return [{ type: 'tool_use', name: 'ToolSearch', input: { query: `select:${step.tool}` } }];
    }
    next++;
    await step.before?.(results);
    const id = `toolu_fake_step_${++seq}`;
    sent.set(id, { step: step.tool, toolUseId: id });
    return [{ type: 'tool_use', id, name: step.tool, input: step.input }];
  };
}

// script(body, ctx) is called for each agent turn (a request of the agent loop:
// it offers ToolSearch or a tool whose name starts with `toolPrefix`) and
// returns the content blocks of the answer; it may be async (to hold a turn
// until the test is ready).
export async function startFakeAnthropic({ toolPrefix, script }) {
  const log = [];       // every request: {method, path, agentTurn, body}
  const escapes = [];   // proxy-style requests (anything aimed beyond this server)
  const turns = [];     // agent turns: {at, body}
  const server = http.createServer((req, res) => {
    if (req.method === 'CONNECT' || /^https?:\/\//.test(req.url)) {
      escapes.push(`${req.method} ${req.url}`);
      res.writeHead(403).end('blocked by the test: nothing leaves 127.0.0.1');
      return;
    }
    let raw = '';
    req.on('data', (c) => { raw += c; });
    req.on('end', async () => {
      const at = performance.now();
      let body = {};
      try { body = raw ? JSON.parse(raw) : {}; } catch { body = { unparsed: raw.slice(0, 200) }; }
      const path = req.url.split('?')[0];
      // The agent loop offers Claude Code's tools; MCP tools either in full or,
      // with tool search on (the default), by name only until ToolSearch loads them.
      const agentTurn = Array.isArray(body.tools)
        && body.tools.some((t) => t.name === 'ToolSearch' || t.name?.startsWith(toolPrefix));
      log.push({ method: req.method, path, agentTurn, at, stream: body.stream === true, model: body.model });
      if (process.env.FAKE_ANTHROPIC_DUMP) appendFileSync(process.env.FAKE_ANTHROPIC_DUMP, `${JSON.stringify(body)}\n`);
      try {
        if (req.method === 'POST' && path === '/v1/messages/count_tokens') {
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ input_tokens: 100 }));
          return;
        }
        if (req.method === 'POST' && path === '/v1/messages') {
          let content;
          if (agentTurn) {
            turns.push({ at, body });
            content = await script(body, { turn: turns.length });
          } else {
            content = [{ type: 'text', text: 'ok' }];
          }
          const model = body.model ?? 'claude-fake';
          if (body.stream) sse(res, messageEvents(model, content));
          else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(messageJson(model, content)));
          return;
        }
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ type: 'error',
          error: { type: 'not_found_error', message: `fake Messages API: no ${req.method} ${path}` } }));
      } catch (e) {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ type: 'error',
            error: { type: 'api_error', message: String(e) } }));
        } else res.destroy();
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, log, escapes, turns,
           close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }) };
}
