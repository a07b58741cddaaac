{{/*
Names, labels and small lookups shared by every template. All helpers carry the chart prefix.
*/}}

{{- define "modelfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every resource. Truncated to 40 characters so "<fullname>-classification"
(15 more) stays inside the 63-character limit of names and labels.
*/}}
{{- define "modelfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of one component's resources: (dict "root" $ "component" "llm"). */}}
{{- define "modelfleet.componentName" -}}
{{- printf "%s-%s" (include "modelfleet.fullname" .root) .component }}
{{- end }}

{{/*
Selector labels: the immutable subset used by Deployment selectors, Services, HPAs, PDBs,
NetworkPolicies and ServiceMonitors. Call with (dict "root" $ "component" "llm"); without a
component they select every pod of the release.
*/}}
{{- define "modelfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelfleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* Full labels: selector labels plus the mutable ones. Same arguments as selectorLabels. */}}
{{- define "modelfleet.labels" -}}
helm.sh/chart: {{ include "modelfleet.chart" .root }}
{{ include "modelfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: modelfleet
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The model services, in port order. */}}
{{- define "modelfleet.modelServices" -}}
{{- toJson (list "llm" "embedding" "classification" "generation") }}
{{- end }}

{{/* Every fleet process the chart can deploy. */}}
{{- define "modelfleet.services" -}}
{{- toJson (list "gateway" "llm" "embedding" "classification" "generation") }}
{{- end }}

{{/* Fixed ports of the contract: the gateway on 8080, model services on 3002-3005. */}}
{{- define "modelfleet.port" -}}
{{- get (dict "gateway" 8080 "llm" 3002 "embedding" 3003 "classification" 3004 "generation" 3005) . }}
{{- end }}

{{/* Env prefix of a process: "llm" -> "MODELFLEET_LLM_". */}}
{{- define "modelfleet.envPrefix" -}}
{{- printf "MODELFLEET_%s_" (upper .) }}
{{- end }}

{{/* TCP port of a URL: its explicit port, else 443 for https and 80 for http. */}}
{{- define "modelfleet.urlPort" -}}
{{- $host := (urlParse .).host }}
{{- if contains ":" $host }}{{ last (splitList ":" $host) }}
{{- else if hasPrefix "https:" . }}443
{{- else }}80
{{- end }}
{{- end }}

{{/* Decoder services export token and time-to-first-token metrics. */}}
{{- define "modelfleet.isDecoder" -}}
{{- if has . (list "llm" "generation") }}true{{ end }}
{{- end }}

{{/*
Image reference: (dict "root" $ "image" .Values.llm.image). "repo:tag", or "repo:tag@digest" when
image.digest is set (the tag stays for humans; the runtime pulls the digest).
*/}}
{{- define "modelfleet.image" -}}
{{- $tag := .image.tag | default (printf "%s-%s" .root.Chart.AppVersion (.image.variant | default "cpu")) }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
A value as the exact string a process reads from its environment or a config file. Helm parses
every number in values as float64, and Go prints a large float64 in exponent form: tpm 1000000
would reach the gateway as "1e+06", which an integer setting refuses. Whole numbers are printed
as integers, everything else as itself; nil is "". Use it for every env value and config line.
*/}}
{{- define "modelfleet.str" -}}
{{- if kindIs "invalid" . }}
{{- else if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
Draining, all derived from drain.requestDeadlineSeconds (one value):
- the process's SHUTDOWN_GRACE_S (time in-flight requests get after SIGTERM) = the deadline;
- terminationGracePeriodSeconds = preStop pause + deadline + 10 s for the process to exit.
*/}}
{{- define "modelfleet.drainGraceSeconds" -}}
{{- int64 .Values.drain.requestDeadlineSeconds }}
{{- end }}

{{- define "modelfleet.terminationGracePeriodSeconds" -}}
{{- add (int64 .Values.drain.preStopSeconds) (int64 .Values.drain.requestDeadlineSeconds) 10 }}
{{- end }}

{{/* The preStop pause: kubelet's own sleep action (no sleep binary needed in the image). */}}
{{- define "modelfleet.lifecycle" -}}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int64 .Values.drain.preStopSeconds }}
{{- end }}

{{/* The gateway's ServiceAccount name. */}}
{{- define "modelfleet.gatewayServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "modelfleet.componentName" (dict "root" . "component" "gateway")) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* Secret + key the Redis password lives in (built-in Redis). */}}
{{- define "modelfleet.redisPasswordSecret" -}}
{{- .Values.redis.auth.existingSecret | default (include "modelfleet.componentName" (dict "root" . "component" "redis")) }}
{{- end }}

{{/*
The generated Redis password, computed once per render and memoised on .Values, so the Secret,
the gateway's and Redis' checksums see one value (randAlphaNum per include gave each its own).
An existing Secret in the cluster (lookup) wins, so upgrades keep it. `helm template` has no
cluster: GitOps renders should set redis.auth.existingSecret (README, "Redis").
*/}}
{{- define "modelfleet.redisPassword" -}}
{{- if not (hasKey .Values.redis.auth "_generated") }}
{{- $password := .Values.redis.auth.password }}
{{- if not $password }}
{{- $name := include "modelfleet.componentName" (dict "root" . "component" "redis") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name }}
{{- if and $existing $existing.data (index $existing.data "redis-password") }}
{{- $password = index $existing.data "redis-password" | b64dec }}
{{- else }}
{{- $password = randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- $_ := set .Values.redis.auth "_generated" $password }}
{{- end }}
{{- .Values.redis.auth._generated }}
{{- end }}

{{- define "modelfleet.redisPasswordKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.existingSecretPasswordKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{/* True when the gateway has any Redis to talk to. */}}
{{- define "modelfleet.redisConfigured" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.url .Values.externalRedis.existingSecret }}true{{ end }}
{{- end }}

{{/* Pod-level security context shared by every pod. */}}
{{- define "modelfleet.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{/* Container-level security context shared by every container. */}}
{{- define "modelfleet.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
topologySpreadConstraints for one component: (dict "root" $ "component" "llm" "spread" .topologySpread).
*/}}
{{- define "modelfleet.topologySpread" -}}
{{- if .spread.enabled -}}
topologySpreadConstraints:
  - maxSkew: {{ .spread.maxSkew }}
    topologyKey: {{ .spread.topologyKey }}
    whenUnsatisfiable: {{ .spread.whenUnsatisfiable }}
    nodeTaintsPolicy: {{ .spread.nodeTaintsPolicy }}
    nodeAffinityPolicy: Honor
    labelSelector:
      matchLabels:
        {{- include "modelfleet.selectorLabels" (dict "root" .root "component" .component) | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
{{- end }}
{{- end }}

{{/*
HTTP probes: (dict "probes" .probes "startupPath" "/ready").
Model services answer /health as soon as the process is up and /ready (503 before) once the model
is loaded and warmed, so their startupProbe polls /ready: its budget is the model-loading budget,
and liveness (/health) only starts once loading is over. The gateway has no model: /health.
*/}}
{{- define "modelfleet.probes" -}}
startupProbe:
  httpGet:
    path: {{ .startupPath }}
    port: http
  periodSeconds: {{ .probes.startup.periodSeconds }}
  failureThreshold: {{ .probes.startup.failureThreshold }}
  timeoutSeconds: {{ .probes.startup.timeoutSeconds }}
readinessProbe:
  httpGet:
    path: /ready
    port: http
  periodSeconds: {{ .probes.readiness.periodSeconds }}
  failureThreshold: {{ .probes.readiness.failureThreshold }}
  timeoutSeconds: {{ .probes.readiness.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: {{ .probes.liveness.periodSeconds }}
  failureThreshold: {{ .probes.liveness.failureThreshold }}
  timeoutSeconds: {{ .probes.liveness.timeoutSeconds }}
{{- end }}

{{/* Env entries every fleet process reads: (dict "root" $ "component" "llm"). */}}
{{- define "modelfleet.commonEnv" -}}
{{- $p := include "modelfleet.envPrefix" .component -}}
- name: {{ $p }}HOST
  value: "0.0.0.0"
- name: {{ $p }}PORT
  value: {{ include "modelfleet.port" .component | quote }}
- name: {{ $p }}SHUTDOWN_GRACE_S
  value: {{ include "modelfleet.drainGraceSeconds" .root | quote }}
- name: {{ $p }}LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: {{ $p }}LOG_JSON
  value: {{ .root.Values.logJson | quote }}
- name: {{ $p }}ENVIRONMENT
  value: {{ .root.Values.environment | quote }}
{{- with .root.Values.tracing }}
{{- if .otlpEndpoint }}
- name: {{ $p }}OTLP_ENDPOINT
  value: {{ .otlpEndpoint | quote }}
- name: {{ $p }}TRACE_SAMPLE_RATIO
  value: {{ include "modelfleet.str" .sampleRatio | quote }}
{{- end }}
{{- end }}
# The root filesystem is read-only: anything that writes under $HOME goes to /tmp.
- name: HOME
  value: /tmp
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/* User env: a name->value map then raw entries. (dict "env" .env "extraEnv" .extraEnv) */}}
{{- define "modelfleet.userEnv" -}}
{{- range $k, $v := .env }}
- name: {{ $k }}
  value: {{ include "modelfleet.str" $v | quote }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
GPU placement of a pod: (dict "root" $ "spec" $svc "resources" $resources), where spec has gpu,
nodeSelector, tolerations, affinity and runtimeClassName. With spec.gpu.enabled: the GPU limit in
resources, gpuScheduling's nodeSelector (merged under the spec's), tolerations (before the
spec's) and runtimeClassName (unless the spec sets one), and gpu.products as required node
affinity. Returns JSON {resources, nodeSelector, tolerations, affinity, runtimeClassName}: the
model services and the toolkit's Jobs place their pods with this one rule.
*/}}
{{- define "modelfleet.gpuPlacement" -}}
{{- $svc := .spec }}
{{- $resources := deepCopy .resources }}
{{- $nodeSelector := $svc.nodeSelector }}
{{- $tolerations := $svc.tolerations }}
{{- $runtimeClass := $svc.runtimeClassName }}
{{- $affinity := deepCopy ($svc.affinity | default dict) }}
{{- if and $svc.gpu.enabled $svc.gpu.products }}
{{- /* GPU product affinity (labels from GPU feature discovery), e.g. NVIDIA-H100-80GB-HBM3. */}}
{{- $term := dict "matchExpressions" (list (dict "key" "nvidia.com/gpu.product" "operator" "In" "values" $svc.gpu.products)) }}
{{- $node := $affinity.nodeAffinity | default dict }}
{{- $req := $node.requiredDuringSchedulingIgnoredDuringExecution | default dict }}
{{- $terms := $req.nodeSelectorTerms | default list }}
{{- if $terms }}
{{- $merged := list }}
{{- range $terms }}
{{- $merged = append $merged (dict "matchExpressions" (concat (.matchExpressions | default list) $term.matchExpressions)) }}
{{- end }}
{{- $terms = $merged }}
{{- else }}
{{- $terms = list $term }}
{{- end }}
{{- $_ := set $req "nodeSelectorTerms" $terms }}
{{- $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" $req }}
{{- $_ := set $affinity "nodeAffinity" $node }}
{{- end }}
{{- if $svc.gpu.enabled }}
{{- $limits := $resources.limits | default dict }}
{{- $_ := set $limits $svc.gpu.resourceName $svc.gpu.count }}
{{- $_ := set $resources "limits" $limits }}
{{- $nodeSelector = merge (deepCopy ($svc.nodeSelector | default dict)) .root.Values.gpuScheduling.nodeSelector }}
{{- $tolerations = concat .root.Values.gpuScheduling.tolerations ($svc.tolerations | default list) }}
{{- $runtimeClass = $svc.runtimeClassName | default .root.Values.gpuScheduling.runtimeClassName }}
{{- end }}
{{- toJson (dict "resources" $resources "nodeSelector" $nodeSelector "tolerations" $tolerations "affinity" $affinity "runtimeClassName" $runtimeClass) }}
{{- end }}

{{/*
The env entries that give a process the fleet's Redis URL in the variable .name, the password
never in the pod spec: the built-in Redis as redis://:$(REDIS_PASSWORD)@<fullname>-redis:6379/<db>
with REDIS_PASSWORD from its Secret (the kubelet expands $(VAR)); an external Redis as its URL
Secret (db as in that URL); no Redis as "". (dict "root" $ "name" "MODELFLEET_GATEWAY_REDIS_URL" "db" 0)
*/}}
{{- define "modelfleet.redisUrlEnv" -}}
{{- $v := .root.Values }}
{{- if $v.redis.enabled }}
# Not MODELFLEET_*: no setting reads it, only the $(REDIS_PASSWORD) below.
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "modelfleet.redisPasswordSecret" .root }}
      key: {{ include "modelfleet.redisPasswordKey" .root }}
# $(VAR) is expanded by the kubelet, so the password never appears in the pod spec.
- name: {{ .name }}
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s-redis:6379/%s" (include "modelfleet.fullname" .root) (include "modelfleet.str" .db) | quote }}
{{- else if or $v.externalRedis.url $v.externalRedis.existingSecret }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ $v.externalRedis.existingSecret | default (include "modelfleet.componentName" (dict "root" .root "component" "redis")) }}
      key: {{ ternary $v.externalRedis.existingSecretKey "redis-url" (ne $v.externalRedis.existingSecret "") }}
{{- else }}
# No Redis configured.
- name: {{ .name }}
  value: ""
{{- end }}
{{- end }}
