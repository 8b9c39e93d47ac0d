{{/*
Wharf's config.yml: the chart's defaults, then the user's `config`, then the keys the chart owns
(listen addresses, the storage driver, auth.htpasswd, gc) because the pod spec depends on them.
The agent's webhook is not here: its HMAC key is a credential, so the whole endpoint comes from the
agent's Secret as WHARF_NOTIFICATIONS_ENDPOINTS_<n> (see wharf.env).
*/}}
{{- define "wharf.config" -}}
{{- $cfg := mustMergeOverwrite (dict "version" "0.1") (deepCopy (.Values.config | default dict)) }}

{{- $http := dig "http" (dict) $cfg }}
{{- $_ := set $http "addr" ":5000" }}
{{- if .Values.metrics.debug.enabled }}
{{- $_ := set $http "debug" (dict "addr" (printf ":%d" (int .Values.metrics.debug.port))) }}
{{- end }}
{{- $_ := set $cfg "http" $http }}

{{- $storage := dig "storage" (dict) $cfg }}
{{- if eq .Values.storage.driver "s3" }}
{{- $v := .Values.storage.s3 }}
{{- $s3 := dict "bucket" $v.bucket "region" $v.region "forcepathstyle" $v.forcepathstyle "encrypt" $v.encrypt "storageclass" $v.storageclass }}
{{- if $v.regionendpoint }}{{ $_ := set $s3 "regionendpoint" $v.regionendpoint }}{{ end }}
{{- if $v.rootdirectory }}{{ $_ := set $s3 "rootdirectory" $v.rootdirectory }}{{ end }}
{{- if $v.chunksize }}{{ $_ := set $s3 "chunksize" (int64 $v.chunksize) }}{{ end }}
{{- $_ := set $storage "s3" $s3 }}
{{- else }}
{{- $_ := set $storage "filesystem" (dict "rootdirectory" (include "wharf.paths.data" .) "maxthreads" (int .Values.storage.filesystem.maxthreads)) }}
{{- end }}
{{- $_ := set $cfg "storage" $storage }}

{{- if .Values.auth.htpasswd.enabled }}
{{- $auth := dig "auth" (dict) $cfg }}
{{- $_ := set $auth "htpasswd" (dict "realm" .Values.auth.htpasswd.realm "path" (include "wharf.paths.htpasswd" .)) }}
{{- $_ := set $cfg "auth" $auth }}
{{- end }}

{{- $gc := dict "grace" .Values.gc.grace "deleteuntagged" .Values.gc.deleteuntagged }}
{{- if and .Values.gc.enabled .Values.gc.interval }}
{{- $_ := set $gc "interval" .Values.gc.interval }}
{{- end }}
{{- $_ := set $cfg "gc" $gc }}

{{- toYaml $cfg }}
{{- end }}

{{/* The agent's config file (`wharf agent --config`); it holds credentials, so it is a Secret. */}}
{{- define "wharf.agent.config" -}}
{{- $a := .Values.agent }}
{{- $cfg := mustMergeOverwrite (dict) (deepCopy ($a.config | default dict)) }}
{{- $_ := set $cfg "listen" (printf ":%d" (int $a.port)) }}
{{- $registry := dig "registry" (dict) $cfg }}
{{- $_ := set $registry "url" (include "wharf.agent.registryURL" .) }}
{{- if $a.registry.username }}{{ $_ := set $registry "username" $a.registry.username }}{{ end }}
{{- if $a.registry.password }}{{ $_ := set $registry "password" $a.registry.password }}{{ end }}
{{- $_ := set $cfg "registry" $registry }}
{{- $docker := dig "docker" (dict) $cfg }}
{{- $_ := set $docker "socket" (include "wharf.agent.dockerSocket" .) }}
{{- $_ := set $cfg "docker" $docker }}
{{- $_ := set $cfg "signingkey" (include "wharf.paths.agentSigningKey" .) }}
{{- $_ := set $cfg "statedir" (include "wharf.paths.agentState" .) }}
{{- if $a.webhook.enabled }}
{{- $_ := set $cfg "secret" (include "wharf.agent.webhookSecret" .) }}
{{- end }}
{{- toYaml (dict "log" $a.log "agent" $cfg) }}
{{- end }}

{{/*
The HMAC key the registry signs webhook bodies with and the agent checks: agent.webhook.secret, else
the one already in the cluster, else a new one. Memoized in .Values so that every template of one
render sees the same key.
*/}}
{{- define "wharf.agent.webhookSecret" -}}
{{- if not .Values.agent.webhook.secret }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-agent-config" (include "wharf.fullname" .)) }}
{{- $key := "" }}
{{- if $existing }}{{ $key = index ($existing.data | default dict) "webhook-secret" | default "" | b64dec }}{{ end }}
{{- $_ := set .Values.agent.webhook "secret" ($key | default (randAlphaNum 48)) }}
{{- end }}
{{- .Values.agent.webhook.secret }}
{{- end }}

{{/* The registry's notifications endpoint for the agent, as JSON for a WHARF_NOTIFICATIONS_ENDPOINTS_<n> variable. */}}
{{- define "wharf.agent.webhookEndpoint" -}}
{{- $w := .Values.agent.webhook }}
{{- dict "name" "wharf-agent" "url" (include "wharf.agent.webhookURL" .) "timeout" $w.timeout "threshold" (int $w.threshold) "backoff" $w.backoff "secret" (include "wharf.agent.webhookSecret" .) | toJson }}
{{- end }}

{{/* Its index: after the endpoints of config.notifications. */}}
{{- define "wharf.agent.webhookIndex" -}}
{{- len (dig "notifications" "endpoints" (list) (.Values.config | default dict)) }}
{{- end }}

{{- define "wharf.agent.dockerSocket" -}}
{{- if eq .Values.agent.runtime "dind" }}/run/dind/docker.sock{{ else }}/var/run/docker.sock{{ end }}
{{- end }}

{{/*
Checks the schema cannot express well, or that must hold even with --skip-schema-validation.
Included by every template that depends on them, so a bad combination renders nothing.
*/}}
{{- define "wharf.validate" -}}
{{- $fs := eq .Values.storage.driver "filesystem" }}
{{- if and $fs (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount: %d replicas need storage.driver s3; the filesystem driver runs exactly one replica on its volume" (int .Values.replicaCount)) }}
{{- end }}
{{- if and $fs .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled: needs storage.driver s3; the filesystem driver runs exactly one replica" }}
{{- end }}
{{- if and (eq .Values.storage.driver "s3") (not .Values.storage.s3.bucket) }}
{{- fail "storage.s3.bucket: required with storage.driver s3" }}
{{- end }}
{{- if .Values.gc.enabled }}
{{- if eq (empty .Values.gc.schedule) (empty .Values.gc.interval) }}
{{- fail "gc: set exactly one of gc.schedule (a CronJob runs `wharf gc`) and gc.interval (the server runs it), or gc.enabled: false" }}
{{- end }}
{{- if and .Values.gc.schedule $fs (not .Values.storage.filesystem.persistence.enabled) }}
{{- fail "gc.schedule: the GC job cannot see the registry's emptyDir; enable storage.filesystem.persistence or use gc.interval" }}
{{- end }}
{{- if and .Values.gc.schedule $fs (eq .Values.storage.filesystem.persistence.accessMode "ReadWriteOncePod") }}
{{- fail "gc.schedule: a ReadWriteOncePod volume cannot be mounted by the GC job; use gc.interval" }}
{{- end }}
{{- end }}
{{- if and .Values.auth.htpasswd.enabled (not .Values.secrets.htpasswd) (not .Values.secrets.existingSecret) }}
{{- fail "auth.htpasswd.enabled: set secrets.htpasswd or secrets.existingSecret (key htpasswd)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.targetCPUUtilizationPercentage) 0) (not (dig "requests" "cpu" "" (.Values.resources | default dict))) }}
{{- fail "autoscaling.targetCPUUtilizationPercentage: needs resources.requests.cpu" }}
{{- end }}
{{- if .Values.agent.enabled }}
{{- if and (not .Values.secrets.agentSigningKey) (not .Values.secrets.existingSecret) }}
{{- fail "agent.enabled: set secrets.agentSigningKey (a private ES256 JWK) or secrets.existingSecret (key agent-signing-key)" }}
{{- end }}
{{- if and .Values.agent.persistence.enabled (gt (int .Values.agent.replicaCount) 1) }}
{{- fail "agent.replicaCount: agent.persistence holds one journal; run one agent replica with it" }}
{{- end }}
{{- if and (eq .Values.agent.runtime "hostSocket") (not (hasKey .Values.agent.hostSocket "groupId")) }}
{{- fail "agent.hostSocket.groupId: required with agent.runtime hostSocket (the gid that owns the Docker socket on the nodes)" }}
{{- end }}
{{- end }}
{{- range $key := list "filesystem" "s3" "inmemory" }}
{{- if hasKey (dig "storage" (dict) ($.Values.config | default dict)) $key }}
{{- fail (printf "config.storage.%s: choose the driver with storage.driver and its settings under storage.*" $key) }}
{{- end }}
{{- end }}
{{- end }}
