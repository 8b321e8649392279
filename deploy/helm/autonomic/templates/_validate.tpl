{{/*
Value rules that values.schema.json cannot state clearly; each failure names the value at fault and what to do.
Rendered (as nothing) by templates/validate.yaml.
*/}}
{{- define "autonomic.validate" -}}
{{- if not (or .Values.picker.enabled .Values.controller.enabled) }}
{{- fail "picker.enabled and controller.enabled are both false: nothing to install" }}
{{- end }}
{{- if .Values.picker.enabled }}
{{- $owned := dict "pool" "inferencePool.name" "pool-namespace" "the release namespace" "config" "picker.config" "host" "the chart (0.0.0.0)" "port" "picker.ports.extProc" "health-port" "picker.ports.health" "metrics-port" "picker.ports.metrics" "secure-serving" "the chart (always TLS)" "tls-cert" "picker.tls.secretName" "tls-key" "picker.tls.secretName" "drain-seconds" "picker.drainSeconds" "shutdown-delay" "picker.shutdownDelaySeconds" "peers" "picker.replicas" "peer-port" "picker.ports.peers" "replica-address" "the chart (the pod IP)" "no-dra" "picker.dra.enabled" "endpoints" "inferencePool.name (the chart follows a pool)" "endpoints-file" "inferencePool.name (the chart follows a pool)" "kubeconfig" "the service account" }}
{{- range $flag, $_ := .Values.picker.flags }}
{{- if hasKey $owned $flag }}
{{- fail (printf "picker.flags.%s: --%s is set by the chart from %s" $flag $flag (get $owned $flag)) }}
{{- end }}
{{- end }}
{{- if .Values.picker.config.custom }}
{{- $doc := fromYaml .Values.picker.config.custom }}
{{- if hasKey $doc "Error" }}
{{- fail (printf "picker.config.custom: not a YAML mapping: %s" (get $doc "Error")) }}
{{- end }}
{{- if ne (get $doc "kind") "EndpointPickerConfig" }}
{{- fail "picker.config.custom: must be an EndpointPickerConfig (kind: EndpointPickerConfig), as scorer/default-config.yaml" }}
{{- end }}
{{- end }}
{{- $ports := .Values.picker.ports }}
{{- if or (eq (int $ports.extProc) (int $ports.health)) (eq (int $ports.extProc) (int $ports.metrics)) (eq (int $ports.health) (int $ports.metrics)) }}
{{- fail (printf "picker.ports: extProc, health and metrics must differ (got %v, %v, %v)" $ports.extProc $ports.health $ports.metrics) }}
{{- end }}
{{- end }}
{{- if .Values.controller.enabled }}
{{- $c := .Values.controller }}
{{- $owned := dict "prometheus-url" "controller.prometheus.url" "prometheus-token-file" "controller.prometheus.tokenFile" "prometheus-insecure-skip-verify" "controller.prometheus.insecureSkipVerify" "config" "controller.config" "policy" "controller.policy" "dry-run" "controller.dryRun" "metrics-host" "the chart (0.0.0.0)" "metrics-port" "controller.metricsPort" "no-leader-election" "controller.leaderElection.enabled" "lease-namespace" "the release namespace" "lease-name" "the chart (the Lease its Role grants)" "identity" "the pod name" "lease-duration" "controller.leaderElection.leaseDuration" "renew-deadline" "controller.leaderElection.renewDeadline" "retry-period" "controller.leaderElection.retryPeriod" "kubeconfig" "the service account" "twin-clock" "nothing (the cluster twin only)" }}
{{- range $flag, $_ := $c.flags }}
{{- if hasKey $owned $flag }}
{{- fail (printf "controller.flags.%s: --%s is set by the chart from %s" $flag $flag (get $owned $flag)) }}
{{- end }}
{{- end }}
{{- range $key := list "apiVersion" "kind" "policy" "dryRun" "actuator" }}
{{- if hasKey $c.config $key }}
{{- fail (printf "controller.config.%s: set controller.%s instead (apiVersion and kind are the chart's)" $key $key) }}
{{- end }}
{{- end }}
{{- $le := $c.leaderElection }}
{{- if $le.enabled }}
{{- if not (and (lt (float64 $le.retryPeriod) (float64 $le.renewDeadline)) (lt (float64 $le.renewDeadline) (float64 $le.leaseDuration))) }}
{{- fail (printf "controller.leaderElection: retryPeriod (%v) < renewDeadline (%v) < leaseDuration (%v) is required" $le.retryPeriod $le.renewDeadline $le.leaseDuration) }}
{{- end }}
{{- else if gt (int $c.replicas) 1 }}
{{- fail (printf "controller.replicas: %v replicas without leader election would all act; set controller.replicas=1 or controller.leaderElection.enabled=true" $c.replicas) }}
{{- end }}
{{- end }}
{{- end -}}
