{{/* Names, labels, the container and the checks shared by the templates. */}}

{{- define "enricher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "enricher.fullname" -}}
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

{{- define "enricher.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "enricher.selectorLabels" -}}
app.kubernetes.io/name: {{ include "enricher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "enricher.labels" -}}
helm.sh/chart: {{ include "enricher.chart" . }}
{{ include "enricher.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The helm test Pod's labels: not the Deployment's selector, or its ReplicaSet would adopt it. */}}
{{- define "enricher.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "enricher.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "enricher.sidecar" -}}
{{- if eq .Values.mode "sidecar" }}true{{ end -}}
{{- end -}}

{{- define "enricher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "enricher.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "enricher.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* With a NodePort or LoadBalancer Service the admin port gets a ClusterIP Service of its own. */}}
{{- define "enricher.adminServiceSeparate" -}}
{{- if ne .Values.service.type "ClusterIP" }}true{{ end -}}
{{- end -}}

{{- define "enricher.adminServiceName" -}}
{{- if include "enricher.adminServiceSeparate" . -}}
{{- printf "%s-admin" (include "enricher.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- else -}}
{{- include "enricher.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* Container port names: unique within a pod, so prefixed in the backend's pod (sidecar). */}}
{{- define "enricher.portName.http" -}}
{{- if include "enricher.sidecar" . }}enricher-http{{ else }}http{{ end -}}
{{- end -}}
{{- define "enricher.portName.admin" -}}
{{- if include "enricher.sidecar" . }}enricher-admin{{ else }}admin{{ end -}}
{{- end -}}

{{/* credentials value -> environment variable enricher reads it from */}}
{{- define "enricher.credentialVars" -}}
{{- toJson (dict "upstreamHeaders" "ENRICHER_UPSTREAM__HEADERS" "upstreamQuery" "ENRICHER_UPSTREAM__QUERY" "upstreamAuth" "ENRICHER_UPSTREAM__AUTH" "restHeaders" "ENRICHER_REST__HEADERS") -}}
{{- end -}}

{{/* "true" when the chart creates the credentials Secret (some credential is given inline). */}}
{{- define "enricher.createSecret" -}}
{{- $c := .Values.credentials -}}
{{- if and (not $c.existingSecret) (or $c.upstreamHeaders $c.upstreamQuery $c.upstreamAuth $c.restHeaders) }}true{{ end -}}
{{- end -}}

{{- define "enricher.secretName" -}}
{{- default (include "enricher.fullname" .) .Values.credentials.existingSecret -}}
{{- end -}}

{{/* The settings file: config values plus listen/admin_listen. JSON (which is YAML) so that
     large numbers are not written as 1e+06. */}}
{{- define "enricher.configFile" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.http)) -}}
{{- $_ := set $config "admin_listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.admin)) -}}
{{- toPrettyJson $config -}}
{{- end -}}

{{- define "enricher.terminationGracePeriodSeconds" -}}
{{- $grace := .Values.config.shutdown_grace | float64 | ceil | int -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $grace 20 -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds | int -}}
{{- end -}}
{{- end -}}

{{- define "enricher.replicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas | int }}{{ else }}{{ .Values.replicaCount | int }}{{ end -}}
{{- end -}}

{{/* Checks the schema cannot express; included by the ConfigMap, which every mode renders. */}}
{{- define "enricher.validateValues" -}}
{{- if not .Values.config.upstream.url -}}
{{- fail "\n\nenricher: config.upstream.url is required: the backend's Socket.IO URL, e.g.\n  --set config.upstream.url=http://backend.chat.svc:3000\n(in sidecar mode http://localhost:<backend port>)." -}}
{{- end -}}
{{- $c := .Values.credentials -}}
{{- if and $c.existingSecret (or $c.upstreamHeaders $c.upstreamQuery $c.upstreamAuth $c.restHeaders) -}}
{{- fail "\n\nenricher: credentials.existingSecret is set together with inline credentials; use one of them." -}}
{{- end -}}
{{- if eq (int .Values.containerPorts.http) (int .Values.containerPorts.admin) -}}
{{- fail "\n\nenricher: containerPorts.http and containerPorts.admin must differ." -}}
{{- end -}}
{{- $grace := .Values.config.shutdown_grace | float64 | ceil | int -}}
{{- if le (include "enricher.terminationGracePeriodSeconds" . | int) $grace -}}
{{- fail (printf "\n\nenricher: terminationGracePeriodSeconds (%v) must be above config.shutdown_grace (%v), or Kubernetes kills enricher while it drains." .Values.terminationGracePeriodSeconds .Values.config.shutdown_grace) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail "\n\nenricher: autoscaling.minReplicas is above autoscaling.maxReplicas." -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.targetMemoryUtilizationPercentage)) -}}
{{- fail "\n\nenricher: autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage." -}}
{{- end -}}
{{- end -}}

{{/* The enricher container: the Deployment's, and the one printed for the backend's pod in
     sidecar mode. */}}
{{- define "enricher.container" -}}
{{- $c := .Values.credentials -}}
{{- $vars := include "enricher.credentialVars" . | fromJson -}}
{{- $secretName := include "enricher.secretName" . -}}
{{- $createSecret := include "enricher.createSecret" . -}}
- name: enricher
  image: {{ include "enricher.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: [serve, --config, /etc/enricher/config.yaml]
  ports:
    - name: {{ include "enricher.portName.http" . }}
      containerPort: {{ .Values.containerPorts.http }}
      protocol: TCP
    - name: {{ include "enricher.portName.admin" . }}
      containerPort: {{ .Values.containerPorts.admin }}
      protocol: TCP
  {{- $env := list }}
  {{- range $field := keys $vars | sortAlpha }}
  {{- if or $c.existingSecret (and $createSecret (index $c $field)) }}
  {{- $ref := dict "name" $secretName "key" (index $c.secretKeys $field) }}
  {{- if $c.existingSecret }}{{ $_ := set $ref "optional" true }}{{ end }}
  {{- $env = append $env (dict "name" (index $vars $field) "valueFrom" (dict "secretKeyRef" $ref)) }}
  {{- end }}
  {{- end }}
  {{- $env = concat $env .Values.extraEnv }}
  {{- with $env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- range $probe, $path := dict "startupProbe" "/healthz" "livenessProbe" "/healthz" "readinessProbe" "/readyz" }}
  {{- $p := index $.Values $probe }}
  {{- if $p.enabled }}
  {{ $probe }}:
    httpGet:
      path: {{ $path }}
      port: {{ include "enricher.portName.admin" $ }}
    initialDelaySeconds: {{ $p.initialDelaySeconds }}
    periodSeconds: {{ $p.periodSeconds }}
    timeoutSeconds: {{ $p.timeoutSeconds }}
    failureThreshold: {{ $p.failureThreshold }}
    successThreshold: {{ $p.successThreshold }}
  {{- end }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.containerSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.lifecycle }}
  lifecycle:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: enricher-config
      mountPath: /etc/enricher
      readOnly: true
    - name: enricher-tmp
      mountPath: /tmp
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{- define "enricher.volumes" -}}
- name: enricher-config
  configMap:
    name: {{ include "enricher.fullname" . }}
- name: enricher-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}
