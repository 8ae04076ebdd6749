{{- define "pinapp.fullname" -}}
{{- printf "%s-pinapp" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "pinapp.secretName" -}}
{{- default (include "pinapp.fullname" .) .Values.secrets.name -}}
{{- end -}}

{{- define "pinapp.labels" -}}
app.kubernetes.io/name: pinapp
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "pinapp.selector" -}}
app.kubernetes.io/name: pinapp
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pinapp.required" -}}
{{- $_ := required "kafka.bootstrap is required (the brokers, host:port,...)" .Values.kafka.bootstrap -}}
{{- $_ := required "db.host is required (the SingleStore endpoint)" .Values.db.host -}}
{{- $_ := required "s3.bucket is required (the archive's bucket)" .Values.s3.bucket -}}
{{- if .Values.secrets.create -}}
{{- $_ := required "secrets.values.web-token is required (the bearer token the workers' web asks beyond the pod)" (index .Values.secrets.values "web-token") -}}
{{- end -}}
{{- end -}}

{{- define "pinapp.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "pinapp.secretName" .root }}
      key: {{ .key }}
{{- end -}}

{{/* The settings every pinapp process reads: where Kafka, the database and S3 are, and the secrets. */}}
{{- define "pinapp.env" -}}
{{- include "pinapp.required" . }}
- name: PINAPP_PROFILE
  value: {{ .Values.profile | quote }}
- name: PINAPP_KAFKA__BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: PINAPP_KAFKA__PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: PINAPP_KAFKA__REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
- name: PINAPP_KAFKA__SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}
- name: PINAPP_KAFKA__SASL_MECHANISM
  value: {{ .Values.kafka.saslMechanism | quote }}
{{ include "pinapp.secretEnv" (dict "root" . "env" "PINAPP_KAFKA__SASL_USERNAME" "key" "kafka-sasl-username") }}
{{ include "pinapp.secretEnv" (dict "root" . "env" "PINAPP_KAFKA__SASL_PASSWORD" "key" "kafka-sasl-password") }}
{{- end }}
{{- if .Values.kafka.caSecret }}
- name: PINAPP_KAFKA__SSL_CA_FILE
  value: /etc/pinapp/kafka-ca/ca.crt
{{- end }}
- name: PINAPP_DB__HOST
  value: {{ .Values.db.host | quote }}
- name: PINAPP_DB__PORT
  value: {{ .Values.db.port | quote }}
- name: PINAPP_DB__DATABASE
  value: {{ .Values.db.database | quote }}
- name: PINAPP_DB__TLS
  value: {{ .Values.db.tls | quote }}
{{ include "pinapp.secretEnv" (dict "root" . "env" "PINAPP_DB__USER" "key" "db-user") }}
{{ include "pinapp.secretEnv" (dict "root" . "env" "PINAPP_DB__PASSWORD" "key" "db-password") }}
- name: PINAPP_S3__BUCKET
  value: {{ .Values.s3.bucket | quote }}
- name: PINAPP_S3__REGION
  value: {{ .Values.s3.region | quote }}
- name: PINAPP_S3__ENDPOINT_URL
  value: {{ .Values.s3.endpointUrl | quote }}
{{ include "pinapp.secretEnv" (dict "root" . "env" "PINAPP_S3__ACCESS_KEY_ID" "key" "s3-access-key-id") }}
{{ include "pinapp.secretEnv" (dict "root" . "env" "PINAPP_S3__SECRET_ACCESS_KEY" "key" "s3-secret-access-key") }}
{{ include "pinapp.secretEnv" (dict "root" . "env" "PINAPP_WORKER__WEB_TOKEN" "key" "web-token") }}
{{- if .Values.worker.webTlsSecret }}
- name: PINAPP_WORKER__WEB_TLS_CERT_FILE
  value: /etc/pinapp/web-tls/tls.crt
- name: PINAPP_WORKER__WEB_TLS_KEY_FILE
  value: /etc/pinapp/web-tls/tls.key
{{- else }}
- name: PINAPP_WORKER__WEB_BEHIND_TLS_PROXY
  value: {{ .Values.worker.webBehindTlsProxy | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "pinapp.volumeMounts" -}}
{{- if .Values.kafka.caSecret }}
- name: kafka-ca
  mountPath: /etc/pinapp/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.worker.webTlsSecret }}
- name: web-tls
  mountPath: /etc/pinapp/web-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "pinapp.volumes" -}}
{{- if .Values.kafka.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.caSecret }}
{{- end }}
{{- if .Values.worker.webTlsSecret }}
- name: web-tls
  secret:
    secretName: {{ .Values.worker.webTlsSecret }}
{{- end }}
{{- end -}}

{{- define "pinapp.scheme" -}}
{{- if .Values.worker.webTlsSecret }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}
