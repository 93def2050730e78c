{{/*
Container args: one per bridge flag, generated from values. Secrets are
mounted files under /etc/mcp-sse-bridge/, never values in args.
tests/chart/chart_test.mjs runs the real binary with these args
(--check-config), so the chart and the binary cannot drift apart.
*/}}
{{- define "mcp-sse-bridge.args" -}}
{{- $u := .Values.upstream -}}
{{- $s := .Values.server -}}
{{- if not $u.url }}{{ fail "upstream.url is required (the legacy server's SSE URL)" }}{{ end -}}
- {{ printf "--upstream=%v" $u.url | quote }}
- --listen=0.0.0.0:{{ $s.port }}
- {{ printf "--path=%v" $s.path | quote }}
- {{ printf "--connect-timeout=%v" $u.connectTimeout | quote }}
- {{ printf "--endpoint-timeout=%v" $u.endpointTimeout | quote }}
- {{ printf "--initialize-timeout=%v" $u.initializeTimeout | quote }}
- {{ printf "--request-timeout=%v" $u.requestTimeout | quote }}
- {{ printf "--max-request-timeout=%v" $u.maxRequestTimeout | quote }}
- {{ printf "--ping-interval=%v" $u.pingInterval | quote }}
- {{ printf "--ping-timeout=%v" $u.pingTimeout | quote }}
- {{ printf "--post-timeout=%v" $u.postTimeout | quote }}
- {{ printf "--upstream-tcp-keepalive=%v" $u.tcpKeepalive | quote }}
- {{ printf "--upstream-tcp-user-timeout=%v" $u.tcpUserTimeout | quote }}
- {{ printf "--idle-probe-after=%v" $u.idleProbeAfter | quote }}
- {{ printf "--idle-probe-timeout=%v" $u.idleProbeTimeout | quote }}
- {{ printf "--resolve-timeout=%v" $u.resolveTimeout | quote }}
- {{ printf "--resolve-cache-ttl=%v" $u.resolveCacheTtl | quote }}
- {{ printf "--max-message-size=%v" $u.maxMessageSize | quote }}
- {{ printf "--upstream-retries=%v" $u.retries | quote }}
- {{ printf "--max-upstream-sessions=%v" $u.maxSessions | quote }}
- {{ printf "--max-listen-sessions=%v" $u.maxListenSessions | quote }}
- {{ printf "--upstream-mode=%v" $u.mode | quote }}
- {{ printf "--session-idle-timeout=%v" $u.sessionIdleTimeout | quote }}
- {{ printf "--allow-foreign-endpoint=%v" $u.allowForeignEndpoint | quote }}
- {{ printf "--serve-stale-initialize=%v" $u.serveStaleInitialize | quote }}
- {{ printf "--upstream-pipelining=%v" $u.pipelining | quote }}
{{- range $k, $v := $u.headers }}
- {{ printf "--upstream-header=%s: %v" $k $v | quote }}
{{- end }}
{{- if $u.headersSecret.name }}
- {{ printf "--upstream-headers-file=/etc/mcp-sse-bridge/upstream-headers/%v" $u.headersSecret.key | quote }}
{{- end }}
{{- if $u.tls.caSecret.name }}
- {{ printf "--upstream-ca=/etc/mcp-sse-bridge/upstream-ca/%v" $u.tls.caSecret.key | quote }}
{{- end }}
{{- if $u.tls.clientCertSecret }}
- --upstream-client-cert=/etc/mcp-sse-bridge/upstream-client/tls.crt
- --upstream-client-key=/etc/mcp-sse-bridge/upstream-client/tls.key
{{- end }}
{{- if $u.tls.insecure }}
- --upstream-insecure
{{- end }}
- {{ printf "--pool-size=%v" .Values.pool.size | quote }}
- {{ printf "--pool-max-idle-age=%v" .Values.pool.maxIdleAge | quote }}
- {{ printf "--pool-fillers=%v" .Values.pool.fillers | quote }}
- {{ printf "--pool-reuse=%v" .Values.pool.reuse | quote }}
- {{ printf "--keepalive-interval=%v" $s.keepaliveInterval | quote }}
- {{ printf "--max-body-size=%v" $s.maxBodySize | quote }}
- {{ printf "--loop-threads=%v" $s.loopThreads | quote }}
- {{ printf "--loop-packing=%v" $s.loopPacking | quote }}
- {{ printf "--max-connections=%v" $s.maxConnections | quote }}
- {{ printf "--max-inflight=%v" $s.maxInflight | quote }}
- {{ printf "--max-calls-per-session=%v" $s.maxCallsPerSession | quote }}
- {{ printf "--max-revoked-sessions=%v" $s.maxRevokedSessions | quote }}
- {{ printf "--mrtr-park-timeout=%v" $s.mrtrParkTimeout | quote }}
- {{ printf "--mrtr-max-parked=%v" $s.mrtrMaxParked | quote }}
- {{ printf "--client-read-timeout=%v" $s.clientReadTimeout | quote }}
- {{ printf "--client-write-timeout=%v" $s.clientWriteTimeout | quote }}
- {{ printf "--client-idle-timeout=%v" $s.clientIdleTimeout | quote }}
{{- range $s.allowedHosts }}
- {{ printf "--allowed-host=%v" . | quote }}
{{- end }}
{{- range $s.allowedOrigins }}
- {{ printf "--allowed-origin=%v" . | quote }}
{{- end }}
{{- range $s.forwardHeaders }}
- {{ printf "--forward-header=%v" . | quote }}
{{- end }}
- {{ printf "--drain-timeout=%vs" $s.drainTimeoutSeconds | quote }}
- {{ printf "--ready-probe-interval=%v" $s.readyProbeInterval | quote }}
- {{ printf "--metrics-path=%v" $s.metricsPath | quote }}
- {{ printf "--cache-ttl-ms=%v" $s.cacheTtlMs | quote }}
- {{ printf "--cache-scope=%v" $s.cacheScope | quote }}
- {{ printf "--discover-refresh=%v" $s.discoverRefresh | quote }}
{{- if .Values.tls.enabled }}
- --tls-cert=/etc/mcp-sse-bridge/tls/tls.crt
- --tls-key=/etc/mcp-sse-bridge/tls/tls.key
{{- if .Values.tls.clientCA.enabled }}
- {{ printf "--tls-client-ca=/etc/mcp-sse-bridge/client-ca/%v" .Values.tls.clientCA.key | quote }}
{{- end }}
{{- end }}
{{- if .Values.auth.enabled }}
- {{ printf "--auth-tokens-file=/etc/mcp-sse-bridge/auth/%v" .Values.auth.key | quote }}
- {{ printf "--auth-health=%v" .Values.auth.health | quote }}
- {{ printf "--auth-metrics=%v" .Values.auth.metrics | quote }}
{{- end }}
- {{ printf "--session-secret-file=/etc/mcp-sse-bridge/session/%v" .Values.sessionSecret.key | quote }}
- {{ printf "--log-level=%v" .Values.logging.level | quote }}
- {{ printf "--log-format=%v" .Values.logging.format | quote }}
{{- if .Values.config }}
- --config=/etc/mcp-sse-bridge/config/config.toml
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}
