{{/*
Names and labels.
*/}}

{{/* The chart's name (app.kubernetes.io/name of the Sluice pods). */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, the prefix of every resource name. */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The name of one component's resources: <fullname>-<component>. The full name is cut to 42
characters so that every name stays a DNS label (63), "-nats-headless" included, and the
StatefulSets' controller-revision-hash labels fit too.
Pass (dict "ctx" $ "component" "api").
*/}}
{{- define "sluice.componentName" -}}
{{- printf "%s-%s" (include "sluice.fullname" .ctx | trunc 42 | trimSuffix "-") .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. Pass (dict "ctx" $ "component" "api"); the component may be left out (every
Sluice pod), and "app" names another application (NATS pods: "nats").
*/}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ .app | default (include "sluice.name" .ctx) }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* Labels of every object; same argument as sluice.selectorLabels. */}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" .ctx }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The Sluice services.
*/}}

{{/* The services this release runs, as a JSON list (use with fromJsonArray). */}}
{{- define "sluice.services" -}}
{{- $out := list }}
{{- range $name := list "identity" "control" "policy" "approvals" "recorder" "api" "pgworker" "sshworker" "k8sworker" "mcpworker" "exporter" "slackbot" }}
{{- $svc := index $.Values $name }}
{{- if or (not (hasKey $svc "enabled")) $svc.enabled }}
{{- $out = append $out $name }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* The port a service listens on for its clients ("" for none). Pass the service's name. */}}
{{- define "sluice.clientPort" -}}
{{- $ports := dict "api" 8080 "pgworker" 15432 "sshworker" 12222 "k8sworker" 16443 "mcpworker" 8081 "slackbot" 8091 }}
{{- index $ports . | default "" }}
{{- end }}

{{/* The name of that port. */}}
{{- define "sluice.clientPortName" -}}
{{- $names := dict "api" "http" "pgworker" "postgres" "sshworker" "ssh" "k8sworker" "https" "mcpworker" "http" "slackbot" "http" }}
{{- index $names . | default "" }}
{{- end }}

{{/* The flag (as its variable) of that port's listen address. */}}
{{- define "sluice.clientPortEnv" -}}
{{- $envs := dict "api" "SLUICE_ADDR" "pgworker" "SLUICE_PG_ADDR" "sshworker" "SLUICE_SSH_ADDR" "k8sworker" "SLUICE_K8S_ADDR" "mcpworker" "SLUICE_MCP_ADDR" "slackbot" "SLUICE_SLACK_ADDR" }}
{{- index $envs . | default "" }}
{{- end }}

{{/* "true" when a service needs the master key. Pass (dict "ctx" $ "component" NAME). */}}
{{- define "sluice.needsMasterKey" -}}
{{- if has .component (list "pgworker" "sshworker" "k8sworker" "mcpworker") }}true
{{- else if and (eq .component "identity") .ctx.Values.sshworker.enabled }}true
{{- end }}
{{- end }}

{{/* "true" when a service presents the workers' TLS certificate. */}}
{{- define "sluice.needsWorkerTLS" -}}
{{- if has .component (list "pgworker" "k8sworker") }}true{{ end }}
{{- end }}

{{/* "true" when the recorder runs as a StatefulSet (an anchor volume per replica). */}}
{{- define "sluice.recorderStateful" -}}
{{- if .Values.recorder.auditAnchor.enabled }}true{{ end }}
{{- end }}

{{/*
NATS.
*/}}

{{- define "sluice.natsName" -}}
{{- include "sluice.componentName" (dict "ctx" . "component" "nats") }}
{{- end }}

{{- define "sluice.natsHeadlessName" -}}
{{- include "sluice.componentName" (dict "ctx" . "component" "nats-headless") }}
{{- end }}

{{/* The DNS name of NATS pod i. Pass (dict "ctx" $ "i" 0). */}}
{{- define "sluice.natsPodHost" -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "sluice.natsName" .ctx) (int .i) (include "sluice.natsHeadlessName" .ctx) .ctx.Release.Namespace .ctx.Values.clusterDomain }}
{{- end }}

{{/* SLUICE_NATS: every NATS server, comma-separated. */}}
{{- define "sluice.natsURLs" -}}
{{- if .Values.nats.enabled }}
{{- $urls := list }}
{{- range $i := until (int .Values.nats.replicas) }}
{{- $urls = append $urls (printf "tls://%s:4222" (include "sluice.natsPodHost" (dict "ctx" $ "i" $i))) }}
{{- end }}
{{- join "," $urls }}
{{- else }}
{{- required "nats.externalURLs is required when nats.enabled is false" (join "," .Values.nats.externalURLs) }}
{{- end }}
{{- end }}

{{/* The Secret holding the CA that verifies NATS. */}}
{{- define "sluice.natsCASecret" -}}
{{- .Values.secrets.natsCA.secretName | default .Values.nats.tls.secretName }}
{{- end }}

{{/* storageClassName of a volume claim: empty leaves the default, "-" sets "". */}}
{{- define "sluice.storageClass" -}}
{{- if eq . "-" }}
storageClassName: ""
{{- else if . }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
One service's environment, mounts and volumes. Pass (dict "ctx" $ "component" NAME).
*/}}

{{- define "sluice.serviceEnv" -}}
{{- $v := .ctx.Values }}
{{- $name := .component }}
{{- $svc := index $v $name -}}
- name: SLUICE_NATS_NKEY_FILE
  value: /etc/sluice/nats/{{ $name }}.nk
{{- with include "sluice.clientPortEnv" $name }}
- name: {{ . }}
  value: "0.0.0.0:{{ include "sluice.clientPort" $name }}"
{{- end }}
{{- if include "sluice.needsMasterKey" . }}
- name: SLUICE_MASTER_KEY_FILE
  value: /etc/sluice/master/master.key
{{- end }}
{{- if include "sluice.needsWorkerTLS" . }}
- name: SLUICE_TLS_CERT
  value: /etc/sluice/tls/tls.crt
- name: SLUICE_TLS_KEY
  value: /etc/sluice/tls/tls.key
{{- end }}
{{- if and (eq $name "identity") $v.sshworker.enabled }}
- name: SLUICE_SSH_USER_CA
  value: /etc/sluice/ssh-user-ca/ssh_user_ca
{{- end }}
{{- if eq $name "recorder" }}
- name: SLUICE_RECORDER_KEY_FILE
  value: /etc/sluice/recorder/recorder.key
{{- if $svc.auditAnchor.enabled }}
- name: SLUICE_AUDIT_ANCHOR_FILE
  value: /var/lib/sluice/audit-anchor/anchor.jsonl
{{- end }}
{{- end }}
{{- if eq $name "api" }}
{{- with $svc.console.clientID }}
- name: SLUICE_CONSOLE_CLIENT_ID
  value: {{ . | quote }}
- name: SLUICE_CONSOLE_URL
  value: {{ required "api.console.url is required with api.console.clientID" $svc.console.url | quote }}
- name: SLUICE_CONSOLE_KEY_FILE
  value: /etc/sluice/console/console.key
{{- end }}
{{- if $v.sshworker.enabled }}
- name: SLUICE_SSH_HOST_KEY_PUB
  value: /etc/sluice/ssh-host/ssh_host_key.pub
{{- with $v.sshworker.publicAddress }}
- name: SLUICE_SSH_PUBLIC_ADDRESS
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if $v.k8sworker.enabled }}
{{- with $v.k8sworker.publicURL }}
- name: SLUICE_K8S_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- if $v.k8sworker.publicCA.secretName }}
- name: SLUICE_K8S_CA_FILE
  value: /etc/sluice/k8s-ca/ca.crt
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq $name "pgworker") (not (kindIs "invalid" $svc.upstreamPool)) }}
- name: SLUICE_UPSTREAM_POOL
  value: {{ $svc.upstreamPool | quote }}
{{- end }}
{{- if eq $name "sshworker" }}
- name: SLUICE_SSH_HOST_KEY
  value: /etc/sluice/ssh-host/ssh_host_key
{{- end }}
{{- if eq $name "mcpworker" }}
{{- with $svc.publicURL }}
- name: SLUICE_MCP_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- with $svc.allowedOrigins }}
- name: SLUICE_MCP_ALLOWED_ORIGIN
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- if eq $name "exporter" }}
{{- with $svc.syslog.addr }}
- name: SLUICE_SYSLOG
  value: {{ . | quote }}
- name: SLUICE_SYSLOG_TLS
  value: {{ $svc.syslog.tls | quote }}
{{- end }}
{{- with $svc.hec.url }}
- name: SLUICE_HEC_URL
  value: {{ . | quote }}
- name: SLUICE_HEC_TOKEN_FILE
  value: /etc/sluice/hec/token
{{- end }}
- name: SLUICE_EXPORT_FORMAT
  value: {{ $svc.format | quote }}
{{- end }}
{{- if eq $name "slackbot" }}
{{- with $svc.channel }}
- name: SLUICE_SLACK_CHANNEL
  value: {{ . | quote }}
{{- end }}
- name: SLUICE_SLACK_TOKEN_FILE
  value: /etc/sluice/slack/bot-token
- name: SLUICE_SLACK_SIGNING_SECRET_FILE
  value: /etc/sluice/slack/signing-secret
{{- end }}
{{- end }}

{{- define "sluice.serviceVolumeMounts" -}}
{{- $v := .ctx.Values }}
{{- $name := .component }}
{{- $svc := index $v $name -}}
- name: tmp
  mountPath: /tmp
- name: nats-key
  mountPath: /etc/sluice/nats
  readOnly: true
- name: nats-ca
  mountPath: /etc/sluice/nats-ca
  readOnly: true
{{- if $v.settings }}
- name: settings
  mountPath: /etc/sluice/config
  readOnly: true
{{- end }}
{{- if include "sluice.needsMasterKey" . }}
- name: master-key
  mountPath: /etc/sluice/master
  readOnly: true
{{- end }}
{{- if include "sluice.needsWorkerTLS" . }}
- name: worker-tls
  mountPath: /etc/sluice/tls
  readOnly: true
{{- end }}
{{- if and (eq $name "identity") $v.sshworker.enabled }}
- name: ssh-user-ca
  mountPath: /etc/sluice/ssh-user-ca
  readOnly: true
{{- end }}
{{- if eq $name "recorder" }}
- name: recorder-key
  mountPath: /etc/sluice/recorder
  readOnly: true
{{- if $svc.auditAnchor.enabled }}
- name: audit-anchor
  mountPath: /var/lib/sluice/audit-anchor
{{- end }}
{{- end }}
{{- if or (eq $name "sshworker") (and (eq $name "api") $v.sshworker.enabled) }}
- name: ssh-host-key
  mountPath: /etc/sluice/ssh-host
  readOnly: true
{{- end }}
{{- if and (eq $name "api") $svc.console.clientID }}
- name: console-key
  mountPath: /etc/sluice/console
  readOnly: true
{{- end }}
{{- if and (eq $name "api") $v.k8sworker.enabled $v.k8sworker.publicCA.secretName }}
- name: k8s-ca
  mountPath: /etc/sluice/k8s-ca
  readOnly: true
{{- end }}
{{- if and (eq $name "exporter") $svc.hec.url }}
- name: hec-token
  mountPath: /etc/sluice/hec
  readOnly: true
{{- end }}
{{- if eq $name "slackbot" }}
- name: slack
  mountPath: /etc/sluice/slack
  readOnly: true
{{- end }}
{{- with $svc.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Secret volumes are mode 0440 (288): readable by the fsGroup the containers run in, and each
holds only the keys its service needs (items).
*/}}
{{- define "sluice.serviceVolumes" -}}
{{- $v := .ctx.Values }}
{{- $name := .component }}
{{- $svc := index $v $name -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
- name: nats-key
  secret:
    secretName: {{ $v.secrets.natsKeys.secretName }}
    defaultMode: 288
    items:
      - key: {{ $name }}.nk
        path: {{ $name }}.nk
- name: nats-ca
  secret:
    secretName: {{ include "sluice.natsCASecret" .ctx }}
    defaultMode: 292
    items:
      - key: {{ $v.secrets.natsCA.key }}
        path: ca.crt
{{- if $v.settings }}
- name: settings
  configMap:
    name: {{ include "sluice.componentName" (dict "ctx" .ctx "component" "settings") }}
{{- end }}
{{- if include "sluice.needsMasterKey" . }}
- name: master-key
  secret:
    secretName: {{ $v.secrets.masterKey.secretName }}
    defaultMode: 288
    items:
      - key: {{ $v.secrets.masterKey.key }}
        path: master.key
{{- end }}
{{- if include "sluice.needsWorkerTLS" . }}
- name: worker-tls
  secret:
    secretName: {{ $v.secrets.workerTLS.secretName }}
    defaultMode: 288
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- if and (eq $name "identity") $v.sshworker.enabled }}
- name: ssh-user-ca
  secret:
    secretName: {{ $v.secrets.sshUserCA.secretName }}
    defaultMode: 288
    items:
      - key: {{ $v.secrets.sshUserCA.key }}
        path: ssh_user_ca
{{- end }}
{{- if eq $name "recorder" }}
- name: recorder-key
  secret:
    secretName: {{ $v.secrets.recorderKey.secretName }}
    defaultMode: 288
    items:
      - key: {{ $v.secrets.recorderKey.key }}
        path: recorder.key
{{- end }}
{{- if eq $name "sshworker" }}
- name: ssh-host-key
  secret:
    secretName: {{ $v.secrets.sshHostKey.secretName }}
    defaultMode: 288
    items:
      - key: {{ $v.secrets.sshHostKey.key }}
        path: ssh_host_key
{{- end }}
{{- if and (eq $name "api") $svc.console.clientID }}
- name: console-key
  secret:
    secretName: {{ $v.secrets.consoleKey.secretName }}
    defaultMode: 288
    items:
      - key: {{ $v.secrets.consoleKey.key }}
        path: console.key
{{- end }}
{{- if and (eq $name "api") $v.sshworker.enabled }}
- name: ssh-host-key
  secret:
    secretName: {{ $v.secrets.sshHostKey.secretName }}
    defaultMode: 292
    items:
      - key: {{ $v.secrets.sshHostKey.publicKey }}
        path: ssh_host_key.pub
{{- end }}
{{- if and (eq $name "api") $v.k8sworker.enabled $v.k8sworker.publicCA.secretName }}
- name: k8s-ca
  secret:
    secretName: {{ $v.k8sworker.publicCA.secretName }}
    defaultMode: 292
    items:
      - key: {{ $v.k8sworker.publicCA.key }}
        path: ca.crt
{{- end }}
{{- if and (eq $name "exporter") $svc.hec.url }}
- name: hec-token
  secret:
    secretName: {{ $v.secrets.hecToken.secretName }}
    defaultMode: 288
    items:
      - key: {{ $v.secrets.hecToken.key }}
        path: token
{{- end }}
{{- if eq $name "slackbot" }}
- name: slack
  secret:
    secretName: {{ $v.secrets.slack.secretName }}
    defaultMode: 288
    items:
      - key: {{ $v.secrets.slack.tokenKey }}
        path: bot-token
      - key: {{ $v.secrets.slack.signingSecretKey }}
        path: signing-secret
{{- end }}
{{- with $svc.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Preferred anti-affinity that spreads pods with these selector labels across nodes. */}}
{{- define "sluice.spreadAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "sluice.selectorLabels" . | nindent 12 }}
{{- end }}
