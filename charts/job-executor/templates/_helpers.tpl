{{/* The release's base name, at most 63 characters. */}}
{{- define "job-executor.fullname" -}}
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

{{/* The name of the objects for task pods: the base name cut to leave room for `-jobs`, so it
never becomes the base name itself (a release name of 49 characters and more). */}}
{{- define "job-executor.jobsName" -}}
{{- printf "%s-jobs" (include "job-executor.fullname" . | trunc 58 | trimSuffix "-") -}}
{{- end -}}

{{- define "job-executor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "job-executor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "job-executor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "job-executor.commonLabels" -}}
{{ include "job-executor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: job-executor
app.kubernetes.io/managed-by: {{ .Values.managedBy | default .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels of the operator's objects. */}}
{{- define "job-executor.labels" -}}
{{ include "job-executor.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels of the objects for task pods (their ServiceAccount, their NetworkPolicy). */}}
{{- define "job-executor.jobsLabels" -}}
{{ include "job-executor.commonLabels" . }}
app.kubernetes.io/component: jobs
{{- end -}}

{{/* The namespace of Jobs, their ConfigMaps and JobRuns. */}}
{{- define "job-executor.jobNamespace" -}}
{{- .Values.jobNamespace | default .Release.Namespace -}}
{{- end -}}

{{- define "job-executor.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "job-executor.fullname" .) -}}
{{- end -}}

{{/* Empty when none is made or named: task pods then run as the namespace's `default`. */}}
{{- define "job-executor.jobServiceAccountName" -}}
{{- if .Values.jobServiceAccount.create -}}
{{- .Values.jobServiceAccount.name | default (include "job-executor.jobsName" .) -}}
{{- else -}}
{{- .Values.jobServiceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image, also the init image of tasks. */}}
{{- define "job-executor.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "job-executor.ingestSecretName" -}}
{{- .Values.ingest.token.existingSecret | default (printf "%s-ingest" (include "job-executor.fullname" .)) -}}
{{- end -}}

{{/* The operator's Secrets (tokens, credentials, headers, URLs with credentials): no task may
read them where Jobs run beside the operator. Comma-separated, each once. */}}
{{- define "job-executor.operatorSecrets" -}}
{{- $names := list -}}
{{- if include "job-executor.ingestToken" . -}}
{{- $names = append $names (include "job-executor.ingestSecretName" .) -}}
{{- end -}}
{{- $v := .Values -}}
{{- range list $v.ingest.hmac.existingSecret $v.sink.headersSecret.name $v.sink.urlSecret.name $v.nats.urlSecret.name $v.notifications.secret -}}
{{- if . }}{{ $names = append $names . }}{{ end -}}
{{- end -}}
{{- /* Mounted only beside what they serve, as the Deployment mounts them. */ -}}
{{- if and $v.configSource.git.url $v.configSource.git.credentialsSecret -}}
{{- $names = append $names $v.configSource.git.credentialsSecret -}}
{{- end -}}
{{- if and $v.sink.deadLetter.url $v.sink.deadLetter.headersSecret.name -}}
{{- $names = append $names $v.sink.deadLetter.headersSecret.name -}}
{{- end -}}
{{- range $v.envFrom -}}
{{- with .secretRef }}{{ $names = append $names .name }}{{ end -}}
{{- end -}}
{{- join "," (uniq $names) -}}
{{- end -}}

{{/* The Secrets of the job namespace no task may read: the operator's own where Jobs run
beside it, the image pull secrets (they are in the job namespace for the init container) and
Helm's release records, which hold every value rendered (a generated ingest token too). */}}
{{- define "job-executor.refusedSecrets" -}}
{{- $names := .Values.imagePullSecrets | default list -}}
{{- if eq (include "job-executor.jobNamespace" .) .Release.Namespace -}}
{{- with include "job-executor.operatorSecrets" . }}{{ $names = concat (splitList "," .) $names }}{{ end -}}
{{- end -}}
{{- join "," (uniq (append $names "sh.helm.release.v1.*")) -}}
{{- end -}}

{{/* Whether the operator gets an ingest token. */}}
{{- define "job-executor.ingestToken" -}}
{{- if or .Values.ingest.token.existingSecret .Values.ingest.token.generate -}}true{{- end -}}
{{- end -}}

{{/* Where the git credentials Secret is mounted. */}}
{{- define "job-executor.gitCredentialsDir" -}}/etc/job-executor/git-credentials{{- end -}}

{{/* Where the sink's Secrets are mounted: its headers, its CA, the dead-letter sink's headers. */}}
{{- define "job-executor.sinkHeadersDir" -}}/etc/job-executor/sink-headers{{- end -}}
{{- define "job-executor.sinkCaDir" -}}/etc/job-executor/sink-ca{{- end -}}
{{- define "job-executor.deadLetterHeadersDir" -}}/etc/job-executor/dead-letter-headers{{- end -}}

{{/* Where the notifications Secret is mounted: a file per target, holding its URL. */}}
{{- define "job-executor.notifyDir" -}}/etc/job-executor/notify{{- end -}}

{{/* The installation's notification targets as `--notify` reads them: `KIND:TARGET:WHEN,…`
joined by `;` (WHEN `failed` when a target gives none, as the operator defaults). */}}
{{- define "job-executor.notifyTargets" -}}
{{- $targets := list -}}
{{- range . -}}
{{- $kind := ternary "slack" "webhook" (hasKey . "slack") -}}
{{- $when := .when | default (list "failed") -}}
{{- $targets = append $targets (printf "%s:%s:%s" $kind (get . $kind) (join "," $when)) -}}
{{- end -}}
{{- join ";" $targets -}}
{{- end -}}

{{/* Where the ingest token Secret is mounted. */}}
{{- define "job-executor.ingestTokenDir" -}}/etc/job-executor/ingest-token{{- end -}}

{{/* Where the ingest HMAC secret is mounted. */}}
{{- define "job-executor.ingestHmacDir" -}}/etc/job-executor/ingest-hmac{{- end -}}

{{/* A map as `key=value,…`, sorted by key. */}}
{{- define "job-executor.keyValues" -}}
{{- $pairs := list -}}
{{- range $k, $v := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $k (toString $v)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* A quantity (the forms the schema allows) as a number of its base units, for comparisons
(floating point: values within a millionth of a millionth compare as equal, see
"job-executor.requestAboveLimit"). */}}
{{- define "job-executor.quantity" -}}
{{- $text := toString . | trimPrefix "+" -}}
{{- $number := regexFind "^[0-9]*[.]?[0-9]*" $text -}}
{{- $suffix := trimPrefix $number $text -}}
{{- $units := dict "" 1.0 "n" 0.000000001 "u" 0.000001 "m" 0.001 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "P" 1000000000000000.0 "E" 1000000000000000000.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- $value := float64 $number -}}
{{- if hasKey $units $suffix -}}
{{- $value = mulf $value (get $units $suffix) -}}
{{- else -}}
{{- /* `atoi`, base 10: `int` reads `08` (from `1e+08`, a YAML number printed) as octal, and as 0. */ -}}
{{- $exponent := atoi (trimPrefix "+" (substr 1 -1 $suffix)) -}}
{{- range until (int (max $exponent (sub 0 $exponent))) -}}
{{- $value = ternary (mulf $value 10.0) (divf $value 10.0) (gt $exponent 0) -}}
{{- end -}}
{{- end -}}
{{- $value -}}
{{- end -}}

{{/* Fails when the default request `.request` (named `.name`) is above its limit `.limit`:
the operator refuses to start so (the API server would refuse the Job of every task without
its own resources). */}}
{{- define "job-executor.requestAboveLimit" -}}
{{- $request := include "job-executor.quantity" .request | float64 -}}
{{- $limit := include "job-executor.quantity" .limit | float64 -}}
{{- if gt $request (mulf $limit 1.000000000001) -}}
{{- fail (printf "settings.defaultResources.%sRequest (%v) is above %sLimit (%v): Kubernetes refuses the Job of every task without its own resources" .name .request .name .limit) -}}
{{- end -}}
{{- end -}}
