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
{{- toJson (dict "upstreamHeaders" "ENRICHER_UPSTREAM__HEADERS" "upstreamQuery" "ENRICHER_UPSTREAM__QUERY" "upstreamAuth" "ENRICHER_UPSTREAM__AUTH" "restHeaders" "ENRICHER_REST__HEADERS" "jwtSecret" "ENRICHER_AUTH__JWT__SECRET" "redisUrl" "ENRICHER_RECOVERY__REDIS_URL" "adminUiPassword" "ENRICHER_ADMIN_UI__PASSWORD") -}}
{{- end -}}

{{/* "true" when some credential is given inline. */}}
{{- define "enricher.inlineCredentials" -}}
{{- $c := .Values.credentials -}}
{{- if or $c.upstreamHeaders $c.upstreamQuery $c.upstreamAuth $c.restHeaders $c.jwtSecret $c.redisUrl $c.adminUiPassword }}true{{ end -}}
{{- end -}}

{{/* "true" when the chart creates the credentials Secret (some credential is given inline). */}}
{{- define "enricher.createSecret" -}}
{{- if and (not .Values.credentials.existingSecret) (include "enricher.inlineCredentials" .) }}true{{ end -}}
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
{{- $auth := .Values.config.auth -}}
{{- if not $auth.mode -}}
{{- fail "\n\nenricher: config.auth.mode is required: who may connect to enricher. One of\n  none     anyone who can reach the Service or Ingress gets every event the backend\n           broadcasts: only behind something that authenticates (an authenticating\n           Ingress or gateway, or a private network of trusted clients);\n  jwt      a JSON Web Token from the browser (socket.io-client's auth: {token}), checked\n           with credentials.jwtSecret (HS*) or config.auth.jwt.public_key/jwks_url;\n  backend  the browser's cookie/Authorization, asked of config.auth.backend_url.\ne.g.\n  --set config.auth.mode=jwt --set credentials.jwtSecret=<HMAC secret>\n  --set config.auth.mode=backend --set config.auth.backend_url=http://backend.chat.svc:3000/api/me\n  --set config.auth.mode=none" -}}
{{- end -}}
{{- $c := .Values.credentials -}}
{{- if eq $auth.mode "jwt" -}}
{{- /* As enricher's own check (JwtSettings.problem), which would otherwise stop it at start. */ -}}
{{- $hmac := 0 -}}{{- $public := 0 -}}
{{- range $auth.jwt.algorithms -}}{{- if hasPrefix "HS" . }}{{ $hmac = add1 $hmac }}{{ else }}{{ $public = add1 $public }}{{ end -}}{{- end -}}
{{- if and $hmac $public -}}
{{- fail "\n\nenricher: config.auth.jwt.algorithms mixes HS* and public-key algorithms; use one kind." -}}
{{- end -}}
{{- if and $hmac (not (or $c.jwtSecret $c.existingSecret)) -}}
{{- fail (printf "\n\nenricher: config.auth.mode=jwt with HS* algorithms (%s) needs the HMAC secret:\n  --set credentials.jwtSecret=<secret>   (or key %s of credentials.existingSecret)\nor, for tokens signed with a private key, public-key algorithms and their key:\n  --set 'config.auth.jwt.algorithms={RS256}' --set config.auth.jwt.jwks_url=https://issuer.example.com/.well-known/jwks.json" (join ", " $auth.jwt.algorithms) $c.secretKeys.jwtSecret) -}}
{{- end -}}
{{- if and $public (not (or $auth.jwt.public_key $auth.jwt.jwks_url)) -}}
{{- fail (printf "\n\nenricher: config.auth.mode=jwt with public-key algorithms (%s) needs config.auth.jwt.public_key (PEM) or config.auth.jwt.jwks_url, e.g.\n  --set config.auth.jwt.jwks_url=https://issuer.example.com/.well-known/jwks.json" (join ", " $auth.jwt.algorithms)) -}}
{{- end -}}
{{- end -}}
{{- $recovery := .Values.config.recovery -}}
{{- if and $recovery.enabled (eq $recovery.store "redis") (ne (.Values.config.upstream.mode | default "transparent") "shared") -}}
{{- fail "\n\nenricher: config.recovery.store=redis needs config.upstream.mode=shared (in transparent mode each browser's session is its own backend connection, held by one pod)." -}}
{{- end -}}
{{- if and $recovery.enabled (eq $recovery.store "redis") (not (or $recovery.redis_url $c.redisUrl $c.existingSecret)) -}}
{{- fail "\n\nenricher: config.recovery.store=redis needs the Redis every pod shares (an existing one):\n  --set config.recovery.redis_url=redis://redis-master.data.svc:6379/0\nor, with a password, --set credentials.redisUrl=redis://:<password>@redis-master.data.svc:6379/0\n(or key redis-url of credentials.existingSecret)." -}}
{{- end -}}
{{- if and .Values.config.admin_ui.enabled (not (or $c.adminUiPassword $c.existingSecret)) -}}
{{- fail (printf "\n\nenricher: config.admin_ui.enabled needs the Admin UI's password, 12 characters at least:\n  --set credentials.adminUiPassword=<12+ characters>   (or key %s of credentials.existingSecret)" $c.secretKeys.adminUiPassword) -}}
{{- end -}}
{{- /* As enricher's own check (AdminUiSettings): characters, not bytes. */ -}}
{{- if and $c.adminUiPassword (not (regexMatch "^(?s).{12,}$" $c.adminUiPassword)) -}}
{{- fail "\n\nenricher: credentials.adminUiPassword is shorter than 12 characters; the Admin UI shows who is connected:\n  --set credentials.adminUiPassword=<12+ characters>" -}}
{{- end -}}
{{- if and (eq $auth.mode "backend") (not $auth.backend_url) -}}
{{- fail "\n\nenricher: config.auth.mode=backend needs config.auth.backend_url, the endpoint asked (GET, with the browser's Cookie and Authorization) whether a browser may connect, e.g.\n  --set config.auth.backend_url=http://backend.chat.svc:3000/api/me" -}}
{{- end -}}
{{- if and $c.existingSecret (include "enricher.inlineCredentials" .) -}}
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
