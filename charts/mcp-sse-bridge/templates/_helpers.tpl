{{- define "mcp-sse-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mcp-sse-bridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mcp-sse-bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mcp-sse-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mcp-sse-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-sse-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mcp-sse-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mcp-sse-bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the session secret. */}}
{{- define "mcp-sse-bridge.sessionSecretName" -}}
{{- default (printf "%s-session" (include "mcp-sse-bridge.fullname" .)) .Values.sessionSecret.existingSecret -}}
{{- end -}}

{{- define "mcp-sse-bridge.authSecretName" -}}
{{- default (printf "%s-auth" (include "mcp-sse-bridge.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* HTTP probes unless the kubelet cannot pass: mTLS or protected health. */}}
{{- define "mcp-sse-bridge.httpProbes" -}}
{{- if or (and .Values.tls.enabled .Values.tls.clientCA.enabled) (and .Values.auth.enabled (eq .Values.auth.health "protected")) -}}
false
{{- else -}}
true
{{- end -}}
{{- end -}}

{{- define "mcp-sse-bridge.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}

{{- define "mcp-sse-bridge.terminationGrace" -}}
{{- $drain := int .Values.server.drainTimeoutSeconds -}}
{{- $grace := .Values.terminationGracePeriodSeconds | default (add $drain 10) | int -}}
{{- if le $grace $drain -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than server.drainTimeoutSeconds (%d)" $grace $drain) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}
