{{/*
The toolkit's Jobs (training, tuning) share one pod shape: the toolkit image running `modelfleet
<command> --config /config/<command>.yaml`, the config from the toolkit ConfigMap, the data
volume at /data as the working directory, GPU placement by modelfleet.gpuPlacement (the model
services' rule), the fleet's security contexts. (dict "root" $ "component" "train" "job"
.Values.toolkit.training "command" "train" "env" <extra env entries as YAML text>)
*/}}

{{/* The ConfigMap name of the toolkit Jobs' configs. */}}
{{- define "modelfleet.toolkitConfigName" -}}
{{- include "modelfleet.componentName" (dict "root" . "component" "toolkit") }}
{{- end }}

{{/* A Job's name: "<fullname>-<component>-<hash of its rendered pod template>". A Job's pod
template is immutable: an upgrade that changes nothing in it keeps the Job (no rerun), one that
changes it (config, image, env, placement) starts a new Job instead of failing. Same arguments
as modelfleet.toolkitPodSpec. */}}
{{- define "modelfleet.toolkitJobName" -}}
{{- $pod := include "modelfleet.toolkitPodSpec" . }}
{{- printf "%s-%s" (include "modelfleet.componentName" (dict "root" .root "component" .component)) ($pod | sha256sum | trunc 8) }}
{{- end }}

{{- define "modelfleet.toolkitPodSpec" -}}
{{- $root := .root }}
{{- $tk := $root.Values.toolkit }}
{{- $ctx := dict "root" $root "component" .component }}
{{- $placement := include "modelfleet.gpuPlacement" (dict "root" $root "spec" $tk "resources" $tk.resources) | fromJson }}
metadata:
  # Selector labels only: a chart version in the (immutable) template would make every chart
  # upgrade a new Job, i.e. a new training run.
  labels:
    {{- include "modelfleet.selectorLabels" $ctx | nindent 4 }}
    app.kubernetes.io/part-of: modelfleet
  annotations:
    # The config is in the (mutable) ConfigMap: its hash here makes a new config a new Job.
    checksum/config: {{ toYaml .job.config | sha256sum }}
    {{- with $tk.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "modelfleet.podSecurityContext" $root | nindent 4 }}
  {{- with $placement.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  {{- with $tk.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $placement.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $placement.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $placement.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "modelfleet.image" (dict "root" $root "image" $tk.image) | quote }}
      imagePullPolicy: {{ $tk.image.pullPolicy }}
      command: ["modelfleet", {{ .command | quote }}, "--config", {{ printf "/config/%s.yaml" .command | quote }}]
      # Relative paths of the config (data, output_dir) and the embedded MLflow store are here.
      workingDir: /data
      env:
        # The root filesystem is read-only: caches under $HOME go to /tmp.
        - name: HOME
          value: /tmp
        # Hub downloads (a model id in the config) are kept on the data volume.
        - name: HF_HOME
          value: /data/.cache/huggingface
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- with $tk.mlflow.trackingUri }}
        - name: MLFLOW_TRACKING_URI
          value: {{ . | quote }}
        {{- end }}
        {{- with .env }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with (include "modelfleet.userEnv" (dict "env" $tk.env "extraEnv" $tk.extraEnv) | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
      resources:
        {{- toYaml $placement.resources | nindent 8 }}
      securityContext:
        {{- include "modelfleet.containerSecurityContext" $root | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: config
          mountPath: /config
          readOnly: true
        - name: data
          mountPath: /data
          {{- with $tk.data.subPath }}
          subPath: {{ . }}
          {{- end }}
        {{- if $tk.gpu.enabled }}
        - name: dshm
          mountPath: /dev/shm
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 2Gi
    - name: config
      configMap:
        name: {{ include "modelfleet.toolkitConfigName" $root }}
        items:
          - key: {{ printf "%s.yaml" .command }}
            path: {{ printf "%s.yaml" .command }}
    - name: data
      {{- if $tk.data.existingClaim }}
      persistentVolumeClaim:
        claimName: {{ $tk.data.existingClaim }}
      {{- else }}
      emptyDir:
        sizeLimit: {{ $tk.data.sizeLimit }}
      {{- end }}
    {{- if $tk.gpu.enabled }}
    # torch's DataLoader workers and NCCL use shared memory; the container default is 64Mi.
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: 2Gi
    {{- end }}
{{- end }}
