{{/* Names, labels and the pieces that the registry Deployment and the GC CronJob share. */}}

{{- define "wharf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Room for the longest suffixes within 63 ("-agent-config") and a CronJob's 52 ("-gc"). */}}
{{- define "wharf.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 49 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 49 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 49 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "wharf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wharf.labels" -}}
helm.sh/chart: {{ include "wharf.chart" . }}
app.kubernetes.io/name: {{ include "wharf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The component label keeps the registry's selectors off the agent's pods. */}}
{{- define "wharf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wharf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: registry
{{- end }}

{{- define "wharf.agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wharf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "wharf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wharf.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "wharf.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "wharf.agent.image" -}}
{{- $repo := default .Values.image.repository .Values.agent.image.repository }}
{{- if and (not .Values.agent.image.repository) .Values.image.digest (not .Values.agent.image.tag) }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.Values.agent.image.tag | default .Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret holding credentials: the chart's own or the user's existingSecret. */}}
{{- define "wharf.secretName" -}}
{{- default (printf "%s-secrets" (include "wharf.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "wharf.ownSecret" -}}
{{- if and (not .Values.secrets.existingSecret) (or .Values.secrets.s3AccessKey .Values.secrets.s3SecretKey .Values.secrets.htpasswd .Values.secrets.agentSigningKey) }}true{{ end }}
{{- end }}

{{- define "wharf.registryHost" -}}
{{- printf "%s.%s.svc:%d" (include "wharf.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}

{{- define "wharf.agent.registryURL" -}}
{{- default (printf "http://%s" (include "wharf.registryHost" .)) .Values.agent.registry.url }}
{{- end }}

{{- define "wharf.agent.webhookURL" -}}
{{- printf "http://%s-agent.%s.svc:%d/events" (include "wharf.fullname" .) .Release.Namespace (int .Values.agent.port) }}
{{- end }}

{{/* Paths inside the containers; the config refers to them, the volumes provide them. */}}
{{- define "wharf.paths.config" -}}/etc/wharf/config.yml{{- end }}
{{- define "wharf.paths.htpasswd" -}}/etc/wharf/htpasswd{{- end }}
{{- define "wharf.paths.data" -}}/var/lib/wharf{{- end }}
{{- define "wharf.paths.agentConfig" -}}/etc/wharf-agent/config.yml{{- end }}
{{- define "wharf.paths.agentSigningKey" -}}/etc/wharf-agent/signing-key.json{{- end }}
{{- define "wharf.paths.agentState" -}}/var/lib/wharf-agent{{- end }}

{{- define "wharf.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "wharf.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Credentials as WHARF_* overrides of the config file (config/load.ts resolves them). */}}
{{- define "wharf.env" -}}
{{- $secret := include "wharf.secretName" . }}
{{- $existing := not (empty .Values.secrets.existingSecret) }}
{{- if eq .Values.storage.driver "s3" }}
{{- if or $existing .Values.secrets.s3AccessKey }}
- name: WHARF_STORAGE_S3_ACCESSKEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: s3-access-key
      {{- if $existing }}
      optional: true
      {{- end }}
{{- end }}
{{- if or $existing .Values.secrets.s3SecretKey }}
- name: WHARF_STORAGE_S3_SECRETKEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: s3-secret-key
      {{- if $existing }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- if and .Values.agent.enabled .Values.agent.webhook.enabled }}
- name: WHARF_NOTIFICATIONS_ENDPOINTS_{{ include "wharf.agent.webhookIndex" . }}
  valueFrom:
    secretKeyRef:
      name: {{ include "wharf.fullname" . }}-agent-config
      key: webhook-endpoint
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "wharf.volumeMounts" -}}
- name: config
  mountPath: /etc/wharf
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if eq .Values.storage.driver "filesystem" }}
- name: data
  mountPath: {{ include "wharf.paths.data" . }}
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* One projected volume, so the config and the htpasswd sit side by side in /etc/wharf. */}}
{{- define "wharf.volumes" -}}
- name: config
  projected:
    sources:
      - configMap:
          name: {{ include "wharf.fullname" . }}-config
          items:
            - key: config.yml
              path: config.yml
      {{- if .Values.auth.htpasswd.enabled }}
      - secret:
          name: {{ include "wharf.secretName" . }}
          items:
            - key: htpasswd
              path: htpasswd
      {{- end }}
- name: tmp
  emptyDir: {}
{{- if eq .Values.storage.driver "filesystem" }}
- name: data
  {{- if .Values.storage.filesystem.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.storage.filesystem.persistence.existingClaim | default (printf "%s-data" (include "wharf.fullname" .)) }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod annotations that roll the pods when the config or the chart's Secrets change. */}}
{{- define "wharf.checksums" -}}
checksum/config: {{ include "wharf.config" . | sha256sum }}
{{- if and .Values.agent.enabled .Values.agent.webhook.enabled }}
checksum/webhook: {{ include "wharf.agent.webhookEndpoint" . | sha256sum }}
{{- end }}
{{- if include "wharf.ownSecret" . }}
checksum/secrets: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}
