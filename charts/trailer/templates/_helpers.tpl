{{/* Prefix of every resource name. */}}
{{- define "tl.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every resource carries. */}}
{{- define "tl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: trailerlink
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trailerlink
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "tl.selectorLabels" -}}
app.kubernetes.io/name: trailerlink
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tl.componentLabels" -}}
{{ include "tl.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Image reference of a trailerlink service: (dict "root" $ "service" "gateway").
<image.registry>/<service>:<tag>[@digest], or the service's image.repository as is.
*/}}
{{- define "tl.image" -}}
{{- $svc := index .root.Values .service -}}
{{- $repo := $svc.image.repository | default (printf "%s/%s" (trimSuffix "/" .root.Values.image.registry) .service) -}}
{{- $tag := $svc.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if eq (toString $tag) "latest" -}}{{- fail "image tags must be pinned: \"latest\" is not allowed" -}}{{- end -}}
{{- $ref := printf "%s:%s" $repo (toString $tag) -}}
{{- if $svc.image.digest -}}{{- $ref = printf "%s@%s" $ref $svc.image.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* The HTTP port (health, readiness, metrics) of each service, as in the code. */}}
{{- define "tl.httpPort" -}}
{{- $ports := dict "gateway" 9101 "codec" 9102 "uplink" 9103 "ingest" 9104 "worklist" 9105 "monitor" 9106 -}}
{{- index $ports . -}}
{{- end -}}

{{- define "tl.kafkaBootstrap" -}}
{{- printf "%s-kafka.%s.svc.cluster.local:9092" (include "tl.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "tl.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tl.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Settings every service reads (trailerlink_common.config.ServiceSettings). */}}
{{- define "tl.commonEnv" -}}
- name: TRAILERLINK_TRAILER_ID
  value: {{ .root.Values.trailerId | quote }}
- name: TRAILERLINK_KAFKA_BOOTSTRAP_SERVERS
  value: {{ include "tl.kafkaBootstrap" .root | quote }}
- name: TRAILERLINK_HTTP_PORT
  value: {{ include "tl.httpPort" .service | quote }}
- name: TRAILERLINK_DATA_DIR
  value: /var/lib/trailerlink
- name: TRAILERLINK_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: TRAILERLINK_OTEL_EXPORTER
  value: {{ .root.Values.otel.exporter | quote }}
{{- if and (eq .root.Values.otel.exporter "otlp") .root.Values.otel.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .root.Values.otel.otlpEndpoint | quote }}
{{- end }}
- name: TRAILERLINK_SHUTDOWN_GRACE_SECONDS
  value: {{ .root.Values.shutdownGraceSeconds | quote }}
{{- end -}}

{{/* Probes on the service's HTTP port: alive = /healthz, ready = /readyz. */}}
{{- define "tl.probes" -}}
{{- $startup := .startup | default dict -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: {{ $startup.periodSeconds | default 5 }}
  failureThreshold: {{ $startup.failureThreshold | default 24 }}
  timeoutSeconds: 3
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 15
  timeoutSeconds: 3
  failureThreshold: 4
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 10
  timeoutSeconds: 6
  failureThreshold: 3
{{- end -}}

{{- define "tl.terminationGrace" -}}
{{- add (int .Values.shutdownGraceSeconds) 15 -}}
{{- end -}}

{{- define "tl.imagePullSecrets" -}}
{{- if .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range .Values.imagePullSecrets }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "tl.spoolClaim" -}}
{{- .Values.persistence.spool.existingClaim | default (printf "%s-spool" (include "tl.fullname" .)) -}}
{{- end -}}

{{- define "tl.worklistClaim" -}}
{{- .Values.persistence.worklist.existingClaim | default (printf "%s-worklist" (include "tl.fullname" .)) -}}
{{- end -}}

{{/* The pod-level settings every trailerlink Deployment shares. */}}
{{- define "tl.podCommon" -}}
serviceAccountName: {{ include "tl.fullname" . }}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "tl.terminationGrace" . }}
{{- with include "tl.imagePullSecrets" . }}
{{ . }}
{{- end }}
securityContext:
  {{- include "tl.podSecurityContext" . | nindent 2 }}
{{- end -}}

{{/*
Who may reach a DICOM port. hostPort: the modality's own address arrives, so only the
modality networks. LoadBalancer: ServiceLB masquerades the source, so any address
(the services' AE-title allow-lists still apply).
*/}}
{{- define "tl.lanFrom" -}}
from:
{{- if eq .Values.lan.mode "hostPort" }}
{{- range .Values.lan.modalityCidrs }}
  - ipBlock: {cidr: {{ . }}}
{{- end }}
{{- else }}
  - ipBlock: {cidr: 0.0.0.0/0}
  - namespaceSelector: {}
{{- end }}
{{- end -}}

{{/* The codec's older spool keys, as mounted: comma-separated paths. */}}
{{- define "tl.oldSpoolKeyFiles" -}}
{{- $paths := list -}}
{{- range .Values.secrets.spoolKey.oldKeys -}}
{{- $paths = append $paths (printf "/etc/trailerlink/spool-key/%s" .) -}}
{{- end -}}
{{- join "," $paths -}}
{{- end -}}

{{/*
The admin API's bearer token (trailerlinkctl): every service with an `admin_token_file`
setting gets the Secret mounted (no subPath, so a rotated Secret reaches the pod and the
service, which re-reads the file on each call, takes it without a restart).
*/}}
{{- define "tl.adminTokenEnv" -}}
- name: TRAILERLINK_ADMIN_TOKEN_FILE
  value: /etc/trailerlink/admin-token/token
{{- end -}}

{{- define "tl.adminTokenMount" -}}
- {name: admin-token, mountPath: /etc/trailerlink/admin-token, readOnly: true}
{{- end -}}

{{- define "tl.adminTokenVolume" -}}
- name: admin-token
  secret:
    secretName: {{ .Values.secrets.adminToken.name }}
    defaultMode: 0400
    items:
      - {key: {{ .Values.secrets.adminToken.key }}, path: token}
{{- end -}}

{{/* The monitor agent's TRAILERLINK_SCRAPE_URLS: component=URL of each trailer service's
     /metrics, through the release's ClusterIP Services. */}}
{{- define "tl.scrapeUrls" -}}
{{- $fn := include "tl.fullname" . -}}
{{- $urls := list -}}
{{- range $svc := list "gateway" "codec" "uplink" "worklist" -}}
{{- $urls = append $urls (printf "%s=http://%s-%s.%s.svc.cluster.local:%s/metrics" $svc $fn $svc $.Release.Namespace (include "tl.httpPort" $svc)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{/* The gateway's allowed calling AEs: gateway.allowedPeers, plus the monitor agent's
     synthetic canary when it is on. */}}
{{- define "tl.gatewayPeers" -}}
{{- $peers := .Values.gateway.allowedPeers -}}
{{- if .Values.monitor.canary.enabled -}}
{{- $peers = append $peers .Values.monitor.canary.callingAeTitle | uniq -}}
{{- end -}}
{{- join "," $peers -}}
{{- end -}}
