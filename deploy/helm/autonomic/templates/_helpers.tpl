{{/*
Names. The base is the release name (or "<release>-autonomic" when the release name does not say autonomic), cut
to 40 characters so that "<base>-controller-metrics" stays a valid Service name.
*/}}
{{- define "autonomic.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $chart := default .Chart.Name .Values.nameOverride -}}
{{- if contains $chart .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $chart | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "autonomic.picker.name" -}}{{ include "autonomic.fullname" . }}-picker{{- end -}}
{{- define "autonomic.controller.name" -}}{{ include "autonomic.fullname" . }}-controller{{- end -}}

{{/* Cluster-scoped objects (ClusterRoles, their bindings) also name the namespace: one release per namespace. */}}
{{- define "autonomic.picker.clusterName" -}}{{ include "autonomic.picker.name" . }}-{{ .Release.Namespace }}{{- end -}}
{{- define "autonomic.controller.clusterName" -}}{{ include "autonomic.controller.name" . }}-{{ .Release.Namespace }}{{- end -}}

{{- define "autonomic.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: autonomic
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels: the Kustomize name label plus the release, so two pools' pickers in one namespace differ. */}}
{{- define "autonomic.picker.selectorLabels" -}}
app.kubernetes.io/name: autonomic-picker
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "autonomic.controller.selectorLabels" -}}
app.kubernetes.io/name: autonomic-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "autonomic.picker.labels" -}}
{{ include "autonomic.labels" . }}
{{ include "autonomic.picker.selectorLabels" . }}
app.kubernetes.io/component: endpoint-picker
{{- end -}}
{{- define "autonomic.controller.labels" -}}
{{ include "autonomic.labels" . }}
{{ include "autonomic.controller.selectorLabels" . }}
app.kubernetes.io/component: rebalancer
{{- end -}}

{{/* image: the component's overrides (.Values.<component>.image) over .Values.image; call with (list $ "picker") */}}
{{- define "autonomic.image" -}}
{{- $root := index . 0 -}}
{{- $image := merge (deepCopy (index $root.Values (index . 1)).image) (deepCopy $root.Values.image) -}}
{{- printf "%s:%s" $image.repository (toString (default $root.Chart.AppVersion $image.tag)) -}}
{{- end -}}
{{- define "autonomic.pullPolicy" -}}
{{- $root := index . 0 -}}
{{- (merge (deepCopy (index $root.Values (index . 1)).image) (deepCopy $root.Values.image)).pullPolicy -}}
{{- end -}}

{{/* The pod securityContext of both components (the Kustomize bases'; runAsUser/runAsGroup may be null). */}}
{{- define "autonomic.podSecurityContext" -}}
runAsNonRoot: true
{{- if not (kindIs "invalid" .Values.runAsUser) }}
runAsUser: {{ .Values.runAsUser }}
{{- end }}
{{- if not (kindIs "invalid" .Values.runAsGroup) }}
runAsGroup: {{ .Values.runAsGroup }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "autonomic.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* `--name=value` per entry of a flags map, sorted; true gives `--name`, false and null leave the flag out. */}}
{{- define "autonomic.flags" -}}
{{- range $name, $value := . }}
{{- if kindIs "bool" $value }}
{{- if $value }}
- {{ printf "--%s" $name | quote }}
{{- end }}
{{- else if not (kindIs "invalid" $value) }}
- {{ printf "--%s=%v" $name $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The picker's Service DNS name, as gateways dial it. */}}
{{- define "autonomic.picker.host" -}}
{{ include "autonomic.picker.name" . }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}

{{/* The picker's EndpointPickerConfig: picker.config.custom, else the shipped profile (files/picker-<profile>.yaml,
copies of scorer/<profile>-config.yaml kept equal by tests/unit/test_helm_chart.py). */}}
{{- define "autonomic.picker.config" -}}
{{- if .Values.picker.config.custom -}}
{{- .Values.picker.config.custom | trim -}}
{{- else -}}
{{- $file := printf "files/picker-%s.yaml" .Values.picker.config.profile -}}
{{- .Files.Get $file | required (printf "picker.config.profile: no %s in the chart" $file) | trim -}}
{{- end -}}
{{- end -}}

{{/* The controller's ControllerConfig: policy, dryRun and actuator from their values, every other field from
controller.config (the controller refuses unknown or invalid fields at start, each with its path). */}}
{{- define "autonomic.controller.config" -}}
{{- $c := .Values.controller -}}
apiVersion: autonomic.dev/v1alpha1
kind: ControllerConfig
policy: {{ $c.policy }}
dryRun: {{ $c.dryRun }}
actuator: {{ $c.actuator }}
{{- with $c.config }}
{{ toYaml . }}
{{- end }}
{{- end -}}
