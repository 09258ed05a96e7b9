{{/* Labels every object carries; the selector uses only membrane.selectorLabels (immutable). */}}
{{- define "membrane.labels" -}}
app.kubernetes.io/name: membrane
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: membrane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "membrane.selectorLabels" -}}
app.kubernetes.io/name: membrane
app.kubernetes.io/component: agent
{{- end -}}

{{- define "membrane.image" -}}
{{- $repo := required "image.repository: name the image you built from deploy/Dockerfile and pushed, e.g. --set image.repository=ghcr.io/you/membrane (see deploy/README.md)" .Values.image.repository -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The agent's readiness/liveness check: GET /v1/healthz on its unix socket. */}}
{{- define "membrane.healthCheck" -}}
{{- $status := . -}}
require('node:http').get({socketPath:'/var/run/membrane/agent.sock',path:'/v1/healthz',timeout:4000},r=>process.exit({{ if eq $status "ready" }}r.statusCode===200?0:1{{ else }}0{{ end }})).on('error',()=>process.exit(1)).on('timeout',()=>process.exit(1))
{{- end -}}
