// Helm chart tests (node --test): lint and render with the default values and
// with values-all.yaml (every option on); run the real binary with the
// rendered container args (--check-config, then serving) so that the chart
// and the binary cannot drift; probe paths and ports must be what the binary
// serves. Env: BRIDGE_BIN, EXAMPLE_BIN, TLS_DIR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import yaml from 'js-yaml';

const here = path.dirname(fileURLToPath(import.meta.url));
const chart = path.resolve(here, '../../charts/mcp-sse-bridge');
const helm = path.join(here, 'node_modules/.bin/helm');
const bridge = process.env.BRIDGE_BIN;
const example = process.env.EXAMPLE_BIN;
const tlsDir = process.env.TLS_DIR;
const allValues = path.join(here, 'values-all.yaml');

function helmRun(args) {
  return spawnSync(helm, args, { encoding: 'utf8', timeout: 60000 });
}
function render(extra = []) {
  const r = helmRun(['template', 'rel', chart, '--namespace', 'ns', ...extra]);
  assert.equal(r.status, 0, r.stderr);
  return yaml.loadAll(r.stdout).filter(Boolean);
}
const deploymentOf = (docs) => docs.find((d) => d.kind === 'Deployment');

// Maps /etc/mcp-sse-bridge/<dir>/<file> in args to real files in a temp dir,
// filled the way the Secrets/ConfigMap would be; listen goes to loopback.
function localArgs(docs, { listen = '127.0.0.1:0', upstream } = {}) {
  const dep = deploymentOf(docs);
  const c = dep.spec.template.spec.containers[0];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chart-'));
  const put = (rel, content) => {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), content);
  };
  const cm = docs.find((d) => d.kind === 'ConfigMap');
  if (cm) put('config/config.toml', cm.data['config.toml']);
  for (const s of docs.filter((d) => d.kind === 'Secret')) {
    for (const [k, v] of Object.entries(s.data)) {
      const sub = s.metadata.name.endsWith('-session') ? 'session' : 'auth';
      put(`${sub}/${k}`, Buffer.from(v, 'base64'));
    }
  }
  const pem = (f) => fs.readFileSync(path.join(tlsDir, f));
  put('tls/tls.crt', pem('server.pem'));
  put('tls/tls.key', pem('server.key'));
  put('client-ca/ca.crt', pem('ca.pem'));
  put('upstream-ca/ca.crt', pem('ca.pem'));
  put('upstream-client/tls.crt', pem('client.pem'));
  put('upstream-client/tls.key', pem('client.key'));
  put('upstream-headers/headers', 'X-Secret-Key: from-a-secret\n');
  const mounts = c.volumeMounts.map((m) => m.mountPath);
  const args = c.args.map((a) => {
    const m = /^(--[a-z-]+=)\/etc\/mcp-sse-bridge\/([^/]+)\/(.+)$/.exec(a);
    if (!m) return a;
    // Every file an arg names must be in a mounted volume.
    assert.ok(mounts.includes(`/etc/mcp-sse-bridge/${m[2]}`), `${a}: no volumeMount for it`);
    return m[1] + path.join(dir, m[2], m[3]);
  });
  const out = args.map((a) => {
    if (a.startsWith('--listen=')) return `--listen=${listen}`;
    if (upstream && a.startsWith('--upstream=')) return `--upstream=${upstream}`;
    return a;
  });
  return { args: out, renderedArgs: c.args, container: c, dep, dir };
}

test('helm lint --strict: default values and every option on', () => {
  for (const extra of [[], ['-f', allValues]]) {
    const r = helmRun(['lint', '--strict', chart, ...extra]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
  }
});

test('default render: hardened pod, probes, grace period, PDB, no token mounted', () => {
  const docs = render();
  const kinds = docs.map((d) => d.kind).sort();
  assert.deepEqual(kinds, ['Deployment', 'PodDisruptionBudget', 'Secret', 'Service', 'ServiceAccount']);
  const dep = deploymentOf(docs);
  const pod = dep.spec.template.spec;
  const c = pod.containers[0];
  assert.equal(pod.automountServiceAccountToken, false);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  assert.equal(c.startupProbe.httpGet.path, '/readyz');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  const drain = Number(/--drain-timeout=(\d+)s/.exec(c.args.join(' '))[1]);
  assert.ok(pod.terminationGracePeriodSeconds > drain, 'grace period must exceed the drain timeout');
  const listenPort = Number(/--listen=[^ ]*:(\d+)/.exec(c.args.join(' '))[1]);
  assert.equal(c.ports[0].containerPort, listenPort);
  assert.equal(c.ports[0].name, c.readinessProbe.httpGet.port);
});

test('every option on: all resources, args for every feature, TCP probes under mTLS', () => {
  const docs = render(['-f', allValues]);
  for (const k of ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'Ingress', 'NetworkPolicy',
    'PodDisruptionBudget', 'Secret', 'Service', 'ServiceAccount', 'ServiceMonitor'])
    assert.ok(docs.some((d) => d.kind === k), `missing ${k}`);
  const dep = deploymentOf(docs);
  const c = dep.spec.template.spec.containers[0];
  const a = c.args.join('\n');
  for (const flag of ['--tls-cert=', '--tls-key=', '--tls-client-ca=', '--auth-tokens-file=',
    '--auth-metrics=protected', '--upstream-ca=', '--upstream-client-cert=', '--upstream-client-key=',
    '--upstream-headers-file=', '--upstream-header=X-Tenant: acme', '--forward-header=X-Api-Key',
    '--allowed-host=mcp.example.com', '--allowed-origin=https://app.example.com', '--config=',
    '--pool-reuse=false', '--serve-stale-initialize=false', '--upstream-pipelining=false', '--post-timeout=4s', '--idle-probe-timeout=1500ms', '--max-calls-per-session=16', '--drain-timeout=30s', '--loop-packing=false',
    '--cache-ttl-ms=30000', '--cache-scope=public', '--discover-refresh=5m', '--max-listen-sessions=20'])
    assert.ok(a.includes(flag), `args lack ${flag}`);
  assert.ok(!a.includes('chart-test-token'), 'a token must not appear in args');
  assert.ok(c.startupProbe.tcpSocket && c.readinessProbe.tcpSocket, 'mTLS: kubelet probes cannot use HTTPS');
  assert.equal(dep.spec.template.spec.terminationGracePeriodSeconds, 45);
  assert.equal(dep.spec.replicas, undefined, 'the HPA owns replicas');
  const sm = docs.find((d) => d.kind === 'ServiceMonitor');
  assert.equal(sm.spec.endpoints[0].path, '/metrics');
  assert.equal(sm.spec.endpoints[0].authorization.type, 'Bearer');
});

test('session affinity: the Ingress hashes on Mcp-Session-Id only when asked; needs an Ingress', () => {
  const hashKey = 'nginx.ingress.kubernetes.io/upstream-hash-by';
  const ingressOf = (docs) => docs.find((d) => d.kind === 'Ingress');
  const on = render(['--set', 'upstream.url=http://u:1/sse', '--set', 'upstream.mode=session',
    '--set', 'ingress.enabled=true', '--set', 'sessionAffinity.byMcpSessionId=true']);
  const ann = ingressOf(on).metadata.annotations;
  assert.equal(ann[hashKey], '$http_mcp_session_id');
  // The SSE-friendly annotations stay.
  assert.equal(ann['nginx.ingress.kubernetes.io/proxy-buffering'], 'off');
  const off = render(['--set', 'upstream.mode=session', '--set', 'ingress.enabled=true']);
  assert.equal(ingressOf(off).metadata.annotations[hashKey], undefined);
  assert.equal(ingressOf(render(['-f', allValues])).metadata.annotations[hashKey], '$http_mcp_session_id');
  // Without an Ingress the option would silently do nothing: refused.
  const r = helmRun(['template', 'rel', chart, '--set', 'sessionAffinity.byMcpSessionId=true']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /sessionAffinity.byMcpSessionId needs ingress.enabled/);
  // A typo in the option is refused by the schema.
  const typo = helmRun(['template', 'rel', chart, '--set', 'sessionAffinity.byMcpSesionId=true']);
  assert.notEqual(typo.status, 0);
});

test('the binary accepts the rendered args (--check-config), default and every option on', () => {
  for (const extra of [[], ['-f', allValues]]) {
    const { args } = localArgs(render(extra));
    const r = spawnSync(bridge, [...args, '--check-config'], { encoding: 'utf8', timeout: 10000 });
    assert.equal(r.status, 0, `args ${args.join(' ')}\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /configuration OK/);
  }
});

test('bad values are refused at render time', () => {
  for (const [set, why] of [[['--set', 'terminationGracePeriodSeconds=10'], /must be larger/],
    [['--set', 'logging.level=loud'], /logging|level/],
    [['--set', 'auth.enabled=true'], /auth.existingSecret or auth.tokens/],
    [['--set', 'upstream.url=ftp://x'], /url/]]) {
    const r = helmRun(['template', 'rel', chart, ...set]);
    assert.notEqual(r.status, 0, `accepted ${set.join(' ')}`);
    assert.match(r.stderr, why);
  }
});

// Starts a process, resolves with the first match of `re` in its stderr.
function startAndWait(bin, args, re) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let seen = '';
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`no match in: ${seen}`)); }, 10000);
    p.stderr.on('data', (d) => {
      seen += d;
      const m = re.exec(seen);
      if (m) { clearTimeout(timer); resolve({ proc: p, match: m }); }
    });
    p.on('exit', () => { clearTimeout(timer); reject(new Error(`exited: ${seen}`)); });
  });
}

test('the binary serves what the probes and the ServiceMonitor ask for, with the rendered args', async () => {
  // Every process started here is killed in `finally`, also when a later start fails: a live
  // child would keep node (and the test) running until meson's timeout.
  let up;
  let b;
  try {
    up = await startAndWait(example, ['--listen', '127.0.0.1:0'], /(http:\/\/127\.0\.0\.1:\d+\/sse)/);
    const docs = render(['--set', 'serviceMonitor.enabled=true']);
    const { args, container } = localArgs(docs, { upstream: up.match[1] });
    b = await startAndWait(bridge, args, /"url":"(http:\/\/127\.0\.0\.1:\d+)\/mcp"/);
    const base = b.match[1];
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const r = await fetch(base + container[probe].httpGet.path, { signal: AbortSignal.timeout(5000) });
      assert.equal(r.status, 200, `${probe} ${container[probe].httpGet.path}`);
    }
    const sm = docs.find((d) => d.kind === 'ServiceMonitor');
    const m = await fetch(base + sm.spec.endpoints[0].path, { signal: AbortSignal.timeout(5000) });
    assert.equal(m.status, 200);
    assert.match(await m.text(), /mcp_bridge_requests_total/);
  } finally {
    b?.proc.kill('SIGTERM');
    up?.proc.kill('SIGTERM');
  }
});
