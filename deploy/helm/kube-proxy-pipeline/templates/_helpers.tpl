{{/* Names and labels shared by every object. */}}
{{- define "kpp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kpp.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "kpp.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: kube-proxy-pipeline
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: include "kpp.selector" (list $ "stream") */}}
{{- define "kpp.selector" -}}
app.kubernetes.io/name: kube-proxy-pipeline
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The Kafka connection as the KAFKA_* environment every stage reads (kafka_io/connection.py). */}}
{{- define "kpp.kafkaEnv" -}}
{{- $k := .Values.kafka -}}
{{- if not (has $k.securityProtocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) }}
{{- fail (printf "kafka.securityProtocol %q is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" $k.securityProtocol) }}
{{- end }}
- name: KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required" $k.bootstrap | quote }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
{{- if not $k.sasl.passwordSecret.name }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.passwordSecret.name (an existing Secret)" $k.securityProtocol) }}
{{- end }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
{{- if $k.sasl.usernameSecret.name }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ $k.sasl.usernameSecret.name | quote }}, key: {{ $k.sasl.usernameSecret.key | quote }}}
{{- else }}
- name: KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username (or kafka.sasl.usernameSecret.name) is required with SASL" $k.sasl.username | quote }}
{{- end }}
- name: KAFKA_SASL_PASSWORD_FILE
  value: /etc/kpp/kafka/sasl/password
{{- end }}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.caSecret.name }}
- name: KAFKA_SSL_CAFILE
  value: /etc/kpp/kafka/ca/ca.crt
{{- end }}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.clientSecret.name }}
- name: KAFKA_SSL_CERTFILE
  value: /etc/kpp/kafka/client/tls.crt
- name: KAFKA_SSL_KEYFILE
  value: /etc/kpp/kafka/client/tls.key
{{- end }}
{{- end -}}

{{- define "kpp.kafkaVolumeMounts" -}}
{{- $k := .Values.kafka -}}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- {name: kafka-sasl, mountPath: /etc/kpp/kafka/sasl, readOnly: true}
{{- end }}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.caSecret.name }}
- {name: kafka-ca, mountPath: /etc/kpp/kafka/ca, readOnly: true}
{{- end }}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.clientSecret.name }}
- {name: kafka-client, mountPath: /etc/kpp/kafka/client, readOnly: true}
{{- end }}
{{- end -}}

{{- define "kpp.kafkaVolumes" -}}
{{- $k := .Values.kafka -}}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: kafka-sasl
  secret:
    secretName: {{ $k.sasl.passwordSecret.name | quote }}
    items: [{key: {{ $k.sasl.passwordSecret.key | quote }}, path: password}]
{{- end }}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ $k.tls.caSecret.name | quote }}
    items: [{key: {{ $k.tls.caSecret.key | quote }}, path: ca.crt}]
{{- end }}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.clientSecret.name }}
- name: kafka-client
  secret:
    secretName: {{ $k.tls.clientSecret.name | quote }}
    items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]
{{- end }}
{{- end -}}

{{/* Pod-level security: no root, the runtime's default seccomp profile. */}}
{{- define "kpp.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kpp.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities: {drop: [ALL]}
{{- end -}}
