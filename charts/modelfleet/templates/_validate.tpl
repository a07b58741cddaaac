{{/*
Cross-field checks the JSON schema cannot express. Every mistake is collected, then the render
fails once with the whole list, so a user fixes their values in one pass.
*/}}
{{- define "modelfleet.validateValues" -}}
{{- $errs := list }}
{{- $v := .Values }}
{{- if and $v.redis.enabled (or $v.externalRedis.url $v.externalRedis.existingSecret) }}
{{- $errs = append $errs "redis.enabled and externalRedis are both set: set redis.enabled=false to use externalRedis" }}
{{- end }}
{{- if and (eq $v.environment "production") $v.gateway.enabled (not (or $v.gateway.apiKeys.keys $v.gateway.apiKeys.existingSecret)) }}
{{- $errs = append $errs "environment=production needs gateway.apiKeys.existingSecret (or gateway.apiKeys.keys)" }}
{{- end }}
{{- if eq $v.environment "production" }}
{{- range $v.gateway.apiKeys.keys }}
{{- if lt (len .) 16 }}
{{- $errs = append $errs "gateway.apiKeys.keys: the gateway refuses keys shorter than 16 characters in production" }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.gateway.enabled (eq $v.gateway.discovery "kubernetes") (not $v.rbac.create) (not $v.serviceAccount.name) }}
{{- $errs = append $errs "gateway.discovery=kubernetes with rbac.create=false needs serviceAccount.name of an account allowed to watch endpointslices" }}
{{- end }}
{{- if and $v.networkPolicy.enabled (not $v.gateway.enabled) (not $v.networkPolicy.modelClientsFrom) }}
{{- $errs = append $errs "gateway.enabled=false with networkPolicy.enabled=true leaves the model services reachable by nobody: list their clients in networkPolicy.modelClientsFrom" }}
{{- end }}
{{- $mutableTags := list "latest" "main" "master" "stable" "edge" "nightly" "dev" }}
{{- $images := dict "redis.image" $v.redis.image "redis.metrics.image" $v.redis.metrics.image "toolkit.image" $v.toolkit.image }}
{{- $tuning := $v.toolkit.tuning }}
{{- if and $tuning.enabled (eq $tuning.storage.type "redis") (not (include "modelfleet.redisConfigured" .)) }}
{{- $errs = append $errs "toolkit.tuning.storage.type=redis needs a Redis (redis.enabled or externalRedis): or set storage.type=secret with a database URL" }}
{{- end }}
{{- if and $tuning.enabled (eq $tuning.storage.type "secret") (not $tuning.storage.existingSecret) }}
{{- $errs = append $errs "toolkit.tuning.storage.type=secret needs toolkit.tuning.storage.existingSecret (a Secret holding the study's storage URL)" }}
{{- end }}
{{- range $name := include "modelfleet.services" . | fromJsonArray }}
{{- $_ := set $images (printf "%s.image" $name) (get $v $name).image }}
{{- if hasKey (get $v $name) "vllm" }}
{{- $_ := set $images (printf "%s.vllm.image" $name) (get $v $name).vllm.image }}
{{- end }}
{{- end }}
{{- range $key := keys $images | sortAlpha }}
{{- $img := get $images $key }}
{{- if has (first (splitList "@" ($img.tag | default ""))) $mutableTags }}
{{- $errs = append $errs (printf "%s.tag=%s moves: use an immutable release tag or %s.digest (sha256:...)" $key $img.tag $key) }}
{{- end }}
{{- if and $img.digest (not (regexMatch "^sha256:[0-9a-f]{64}$" $img.digest)) }}
{{- $errs = append $errs (printf "%s.digest must look like sha256:<64 hex digits>" $key) }}
{{- end }}
{{- end }}
{{- range $name := include "modelfleet.services" . | fromJsonArray }}
{{- $svc := get $v $name }}
{{- if $svc.enabled }}
{{- $as := $svc.autoscaling }}
{{- $floor := ternary $as.minReplicas $svc.replicas $as.enabled | int }}
{{- if and (eq (int $svc.rollout.maxSurge) 0) (lt $floor 2) }}
{{- $errs = append $errs (printf "%s.rollout.maxSurge=0 with %d replica(s) at the floor takes the pool to zero during a rollout: set rollout.maxSurge=1 (and maxUnavailable=0), or keep at least 2 replicas" $name $floor) }}
{{- end }}
{{- if and (eq (int $svc.rollout.maxSurge) 0) (eq (int $svc.rollout.maxUnavailable) 0) }}
{{- $errs = append $errs (printf "%s.rollout: maxSurge and maxUnavailable cannot both be 0" $name) }}
{{- end }}
{{- if $as.enabled }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- $errs = append $errs (printf "%s.autoscaling.minReplicas (%v) is above maxReplicas (%v)" $name $as.minReplicas $as.maxReplicas) }}
{{- end }}
{{- if and (eq (int $as.minReplicas) 0) (not $as.keda.enabled) }}
{{- $errs = append $errs (printf "%s.autoscaling.minReplicas=0 (scale to zero) needs autoscaling.keda.enabled=true" $name) }}
{{- end }}
{{- if and $as.keda.enabled (not $as.keda.serverAddress) }}
{{- $errs = append $errs (printf "%s.autoscaling.keda.enabled needs autoscaling.keda.serverAddress (the Prometheus URL KEDA queries)" $name) }}
{{- end }}
{{- if and (not $as.keda.enabled) (eq (int $as.targetCPUUtilizationPercentage) 0) (not $as.customMetric.enabled) }}
{{- $errs = append $errs (printf "%s.autoscaling has no metric: set targetCPUUtilizationPercentage > 0 or customMetric.enabled=true" $name) }}
{{- end }}
{{- end }}
{{- if and $svc.pdb.enabled (not (eq (toString $svc.pdb.minAvailable) "")) (not (eq (toString $svc.pdb.maxUnavailable) "")) }}
{{- $errs = append $errs (printf "%s.pdb: set minAvailable or maxUnavailable, not both" $name) }}
{{- end }}
{{- if and $svc.pdb.enabled (eq (toString $svc.pdb.minAvailable) "") (eq (toString $svc.pdb.maxUnavailable) "") }}
{{- $errs = append $errs (printf "%s.pdb.enabled needs minAvailable or maxUnavailable" $name) }}
{{- end }}
{{- if ne $name "gateway" }}
{{- if and (eq $svc.model.source "pvc") (not $svc.model.pvc.claimName) }}
{{- $errs = append $errs (printf "%s.model.source=pvc needs %s.model.pvc.claimName" $name $name) }}
{{- end }}
{{- if and (eq $svc.model.source "download") (not $svc.model.id) }}
{{- $errs = append $errs (printf "%s.model.source=download needs %s.model.id (a Hugging Face id)" $name $name) }}
{{- end }}
{{- if and (hasKey $svc "vllm") $svc.vllm.enabled }}
{{- if not $svc.gpu.enabled }}
{{- $errs = append $errs (printf "%s.vllm.enabled needs %s.gpu.enabled=true (vLLM serves on a GPU)" $name $name) }}
{{- end }}
{{- if not $svc.model.id }}
{{- $errs = append $errs (printf "%s.vllm.enabled needs %s.model.id (the served model name)" $name $name) }}
{{- end }}
{{- if eq $svc.model.source "image" }}
{{- $errs = append $errs (printf "%s.vllm.enabled: model.source=image is the project's packaged model; use download (vLLM fetches the pinned revision) or pvc" $name) }}
{{- end }}
{{- end }}
{{- if and (ne $svc.model.source "image") (ne $svc.model.source "pvc") (not (regexMatch "^[0-9a-f]{40}$" $svc.model.revision)) }}
{{- $errs = append $errs (printf "%s.model.source=download needs %s.model.revision pinned to a commit (40 hex digits): a branch or tag can change under a running fleet" $name $name) }}
{{- end }}
{{- if $svc.gpu.enabled }}
{{- if eq $svc.device "cpu" }}
{{- $errs = append $errs (printf "%s.gpu.enabled with device=cpu would hold a GPU it never uses: set %s.device=cuda (or auto)" $name $name) }}
{{- end }}
{{- if eq $svc.quantize "int8" }}
{{- $errs = append $errs (printf "%s.quantize=int8 is the CPU path (dynamic int8 linear layers): use quantize=none with gpu.enabled" $name) }}
{{- end }}
{{- if ne $svc.image.variant "cuda" }}
{{- $errs = append $errs (printf "%s.gpu.enabled needs the CUDA image: set %s.image.variant=cuda" $name $name) }}
{{- end }}
{{- else if eq $svc.device "cuda" }}
{{- $errs = append $errs (printf "%s.device=cuda needs %s.gpu.enabled=true (no GPU is requested otherwise)" $name $name) }}
{{- end }}
{{- if and (eq $svc.quantize "int8") (not (include "modelfleet.isDecoder" $name)) }}
{{- $errs = append $errs (printf "%s.quantize=int8 is only supported by the decoder services (llm, generation)" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $errs }}
{{- fail (printf "\n\nmodelfleet: invalid values:\n  - %s\n" (join "\n  - " $errs)) }}
{{- end }}
{{- end }}
