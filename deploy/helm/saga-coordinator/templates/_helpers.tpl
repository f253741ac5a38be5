{{/*
Names. Every resource is "<fullname>-<component>"; fullname defaults to the release name.
*/}}
{{- define "saga.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "saga.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "saga.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels. Call with (dict "ctx" $ "component" "coordinator").
*/}}
{{- define "saga.selectorLabels" -}}
app.kubernetes.io/name: {{ include "saga.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "saga.labels" -}}
helm.sh/chart: {{ include "saga.chart" .ctx }}
{{ include "saga.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: saga-coordinator
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{- define "saga.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "saga.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "saga.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The Secret with the database URLs and the API tokens.
*/}}
{{- define "saga.secretName" -}}
{{- default (printf "%s-secrets" (include "saga.fullname" .)) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "saga.participantSecretKey" -}}
{{- printf "%s_DATABASE_URL" (upper .) -}}
{{- end -}}

{{/*
Environment every saga process shares (no per-replica values: the replicas are alike).
Call with (dict "ctx" $ "databaseKey" "SAGA_DATABASE_URL" "secretName" "...").
*/}}
{{- define "saga.commonEnv" -}}
- name: SAGA_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .databaseKey }}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .ctx.Values.kafka.bootstrapServers | quote }}
- name: SAGA_TOPIC_PREFIX
  value: {{ .ctx.Values.topicPrefix | quote }}
- name: SAGA_DEFINITIONS
  value: {{ .ctx.Values.definitions | quote }}
- name: SAGA_LOG_FORMAT
  value: {{ .ctx.Values.logFormat | quote }}
- name: SAGA_LOG_LEVEL
  value: {{ .ctx.Values.logLevel | quote }}
- name: SAGA_PARTITIONS
  value: {{ .ctx.Values.partitions | quote }}
- name: SAGA_REPLICATION_FACTOR
  value: {{ .ctx.Values.replicationFactor | quote }}
- name: SAGA_METRICS_EXPORTER
  value: {{ .ctx.Values.metricsExporter | quote }}
- name: SAGA_RELAY_PRODUCER_PER
  value: {{ .ctx.Values.relayProducerPer | quote }}
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: HOME
  value: /tmp
{{- with .ctx.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The health server of the coordinators and the participants.
*/}}
{{- define "saga.healthEnv" -}}
- name: SAGA_HEALTH_HOST
  value: "0.0.0.0"
- name: SAGA_HEALTH_PORT
  value: {{ . | quote }}
{{- end -}}

{{/*
Pod annotations: Prometheus scraping (call with (dict "ctx" $ "port" 8081)) and a checksum of
the chart's Secret, so pods restart when it changes.
*/}}
{{- define "saga.podAnnotations" -}}
{{- if and .port .ctx.Values.prometheusAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- if not .ctx.Values.secret.existingSecret }}
checksum/secret: {{ include (print .ctx.Template.BasePath "/secret.yaml") .ctx | sha256sum }}
{{- end }}
{{- with .ctx.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Pod-level settings every workload shares.
*/}}
{{- define "saga.podSpecCommon" -}}
serviceAccountName: {{ include "saga.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Spread the replicas of one component over nodes. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "saga.topologySpread" -}}
{{- if .ctx.Values.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ .ctx.Values.topologySpread.maxSkew }}
    topologyKey: {{ .ctx.Values.topologySpread.topologyKey }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "saga.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/*
A writable /tmp: the root filesystem is read-only.
*/}}
{{- define "saga.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{- define "saga.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/*
Liveness on /healthz, readiness on /readyz, and a startup probe so a slow start (topic
metadata, first rebalance) is not killed. Call with the port name.
*/}}
{{- define "saga.httpProbes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/*
A PodDisruptionBudget. Call with (dict "ctx" $ "component" "api" "maxUnavailable" 1).
*/}}
{{- define "saga.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "saga.fullname" .ctx }}-{{ .component }}
  labels:
    {{- include "saga.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .maxUnavailable }}
  selector:
    matchLabels:
      {{- include "saga.selectorLabels" . | nindent 6 }}
{{- end -}}
