{{- define "adx.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "adx.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "adx.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "adx.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "adx.selectorLabels" -}}
app.kubernetes.io/name: {{ include "adx.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "adx.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "adx.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ad-exchange-exporter
{{- end }}

{{- define "adx.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "adx.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "adx.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The chart writes a web config when TLS or basic auth is asked for; or the user brings one. */}}
{{- define "adx.webConfigRendered" -}}
{{- if and (not .Values.web.existingWebConfigSecret) (or .Values.web.tls.enabled .Values.web.basicAuthUsers) }}true{{ end }}
{{- end }}

{{- define "adx.webConfigSecret" -}}
{{- if .Values.web.existingWebConfigSecret }}{{ .Values.web.existingWebConfigSecret }}{{ else if include "adx.webConfigRendered" . }}{{ include "adx.fullname" . }}-web-config{{ end }}
{{- end }}

{{- define "adx.scheme" -}}
{{- if .Values.web.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{- define "adx.statePath" -}}/var/lib/ad-exchange-exporter/state.db{{- end }}

{{/*
The exporter's config as the pod reads it: the values' config, with the state on the mounted volume and every
probe target of the per-target ServiceMonitors allowed for /probe.
*/}}
{{- define "adx.config" -}}
{{- $config := deepCopy (default dict .Values.config) }}
{{- $state := default dict (get $config "state") }}
{{- if not (get $state "path") }}
{{- $_ := set $state "path" (include "adx.statePath" .) }}
{{- end }}
{{- $_ := set $config "state" $state }}
{{- if .Values.serviceMonitor.targets }}
{{- $probes := default dict (get $config "probes") }}
{{- $allowed := default list (get $probes "allowed_targets") }}
{{- range .Values.serviceMonitor.targets }}
{{- $allowed = append $allowed .target }}
{{- end }}
{{- $_ := set $probes "allowed_targets" ($allowed | uniq) }}
{{- $_ := set $config "probes" $probes }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* How Prometheus reaches the exporter: port, scheme, TLS and basic auth, shared by every ServiceMonitor. */}}
{{- define "adx.endpoint" -}}
port: {{ include "adx.scheme" . }}
scheme: {{ include "adx.scheme" . }}
{{- if .Values.web.tls.enabled }}
tlsConfig:
  {{- toYaml (required "serviceMonitor.tlsConfig is required when web.tls.enabled (the CA that signed the exporter's certificate)" .Values.serviceMonitor.tlsConfig) | nindent 2 }}
{{- end }}
{{- if or .Values.web.basicAuthUsers .Values.web.existingWebConfigSecret }}
{{- with .Values.serviceMonitor.basicAuth }}
basicAuth:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}
