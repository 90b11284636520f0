{{/* The release's full name: RELEASE-tailer, or RELEASE when it already says tailer. */}}
{{- define "tailer.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "tailer" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tailer" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tailer.selectorLabels" -}}
app.kubernetes.io/name: kube-audit-tailer
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tailer.labels" -}}
{{ include "tailer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kube-audit-forwarder
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tailer.serviceAccountName" -}}
{{- default (include "tailer.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Refuse what cannot work, at install time. */}}
{{- define "tailer.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (ne .Values.store.type "postgresql") -}}
{{- fail "replicas > 1 needs store.type postgresql: the replicas share one database" -}}
{{- end -}}
{{- if and (eq .Values.store.type "postgresql") (not .Values.store.postgresql.urlSecret) -}}
{{- fail "store.type postgresql needs store.postgresql.urlSecret (a Secret with the postgresql:// URL)" -}}
{{- end -}}
{{- if and (eq .Values.api.auth "token-file") (not .Values.api.tokenFileSecret) -}}
{{- fail "api.auth token-file needs api.tokenFileSecret (a Secret with key tokens)" -}}
{{- end -}}
{{- end -}}
