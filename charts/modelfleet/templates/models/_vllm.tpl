{{/*
The vLLM OpenAI server as a decoder pool's container (<pool>.vllm.enabled): same Service, port,
GPU placement, drain and probes as the project's service, on vLLM's /health. Called with
(dict "root" $ "name" "llm" "svc" $svc "resources" $resources).
*/}}
{{- define "modelfleet.vllmContainer" -}}
{{- $svc := .svc }}
{{- $v := $svc.vllm }}
- name: vllm
  image: {{ include "modelfleet.image" (dict "root" .root "image" $v.image) | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  # The image's entrypoint is `vllm serve`.
  args:
    - {{ ternary "/models" $svc.model.id (eq $svc.model.source "pvc") | quote }}
    {{- if ne $svc.model.source "pvc" }}
    - --revision
    - {{ $svc.model.revision | quote }}
    {{- end }}
    - --served-model-name
    - {{ $svc.model.id | quote }}
    - --host
    - "0.0.0.0"
    - --port
    - {{ include "modelfleet.port" .name | quote }}
    - --gpu-memory-utilization
    - {{ include "modelfleet.str" $v.gpuMemoryUtilization | quote }}
    {{- if $v.maxModelLen }}
    - --max-model-len
    - {{ include "modelfleet.str" $v.maxModelLen | quote }}
    {{- end }}
    - --max-num-seqs
    - {{ include "modelfleet.str" $svc.batching.maxBatchSize | quote }}
    {{- range $v.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ include "modelfleet.port" .name }}
      protocol: TCP
  env:
    - name: HOME
      value: /tmp
    # Weights download to the cache volume (pinned revision), once per volume.
    - name: HF_HOME
      value: /cache/huggingface
    - name: VLLM_NO_USAGE_STATS
      value: "1"
    - name: DO_NOT_TRACK
      value: "1"
    {{- with $svc.model.download.tokenSecret }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ . }}
          key: HF_TOKEN
    {{- end }}
  # vLLM has no /ready: /health answers 200 once the engine is up.
  startupProbe:
    httpGet:
      path: /health
      port: http
    periodSeconds: {{ $svc.probes.startup.periodSeconds }}
    failureThreshold: {{ $svc.probes.startup.failureThreshold }}
    timeoutSeconds: {{ $svc.probes.startup.timeoutSeconds }}
  readinessProbe:
    httpGet:
      path: /health
      port: http
    periodSeconds: {{ $svc.probes.readiness.periodSeconds }}
    failureThreshold: {{ $svc.probes.readiness.failureThreshold }}
    timeoutSeconds: {{ $svc.probes.readiness.timeoutSeconds }}
  livenessProbe:
    httpGet:
      path: /health
      port: http
    periodSeconds: {{ $svc.probes.liveness.periodSeconds }}
    failureThreshold: {{ $svc.probes.liveness.failureThreshold }}
    timeoutSeconds: {{ $svc.probes.liveness.timeoutSeconds }}
  {{- include "modelfleet.lifecycle" .root | nindent 2 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- include "modelfleet.containerSecurityContext" .root | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: cache
      mountPath: /cache
    {{- if eq $svc.model.source "pvc" }}
    - name: models
      mountPath: /models
      readOnly: true
      {{- with $svc.model.pvc.subPath }}
      subPath: {{ . }}
      {{- end }}
    {{- end }}
    - name: dshm
      mountPath: /dev/shm
{{- end }}
