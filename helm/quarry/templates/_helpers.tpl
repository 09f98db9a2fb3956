{{/* Names, labels and the pieces every workload shares. */}}

{{- define "quarry.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quarry.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "quarry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quarry.labels" -}}
helm.sh/chart: {{ include "quarry.chart" . }}
app.kubernetes.io/name: {{ include "quarry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* selector labels of one component: (dict "root" $ "component" "api") */}}
{{- define "quarry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quarry.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "quarry.componentLabels" -}}
{{ include "quarry.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "quarry.image" -}}
{{- $img := index .root.Values.image .component -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if .root.Values.image.registry -}}
{{ printf "%s/%s:%s" .root.Values.image.registry $img $tag }}
{{- else -}}
{{ printf "%s:%s" $img $tag }}
{{- end -}}
{{- end }}

{{- define "quarry.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "quarry.fullname" .)) }}
{{- end }}

{{- define "quarry.dataClaim" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-data" (include "quarry.fullname" .)) }}
{{- end }}

{{- define "quarry.serviceAccountName" -}}
{{- printf "%s-%s" (include "quarry.fullname" .root) .component }}
{{- end }}

{{/* Pod-level security: a fixed non-root user, RuntimeDefault seccomp. */}}
{{- define "quarry.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
fsGroup: {{ .uid | default 10001 }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security: nothing to escalate, a read-only root, no capabilities. */}}
{{- define "quarry.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* What every Quarry process reads: settings, then secrets. */}}
{{- define "quarry.envFrom" -}}
- configMapRef:
    name: {{ include "quarry.fullname" . }}-config
- secretRef:
    name: {{ include "quarry.secretName" . }}
{{- end }}

{{/* An init container that waits until the migration hook has brought the schema to head. */}}
{{- define "quarry.waitForMigrations" -}}
- name: wait-for-migrations
  image: {{ include "quarry.image" (dict "root" . "component" "api") }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["python", "-m", "api.prestart", "--wait"]
  envFrom:
    {{- include "quarry.envFrom" . | nindent 4 }}
  securityContext:
    {{- include "quarry.containerSecurityContext" . | nindent 4 }}
  resources:
    requests: {cpu: 50m, memory: 128Mi}
    limits: {cpu: 500m, memory: 256Mi}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
{{- end }}

{{- define "quarry.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/config.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{/* The sandbox Jobs' seccomp profile (SANDBOX_SECCOMP_PROFILE). */}}
{{- define "quarry.sandboxSeccompProfile" -}}
{{- if .Values.sandbox.seccompOperator -}}
Localhost:operator/{{ .Values.sandbox.namespace }}/{{ include "quarry.fullname" . }}-sandbox.json
{{- else -}}
{{ .Values.sandbox.seccompProfile }}
{{- end -}}
{{- end }}
