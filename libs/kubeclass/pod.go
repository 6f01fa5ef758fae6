package kubeclass

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"

	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// MaxPodBody bounds the body PodSummary reads.
const MaxPodBody = 512 << 10

// Workload reports whether writes to resource carry a pod spec (pods and
// what makes pods).
func Workload(resource string) bool {
	switch resource {
	case "pods", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs", "replicationcontrollers", "podtemplates":
		return true
	}
	return false
}

// PodSummary reads what a workload write asks a pod to be: the pod spec of
// a Pod, of a pod template (Deployment, Job, ...), of a CronJob's job
// template, or the part of one a merge patch carries. A body it cannot read
// (not JSON, too large, a JSON patch) is a parse error: what it asks is
// unknown.
func PodSummary(body []byte, contentType string) *policyv1.K8SPod {
	pod := &policyv1.K8SPod{}
	if len(body) == 0 {
		return pod
	}
	mt, _, _ := strings.Cut(contentType, ";")
	if len(body) > MaxPodBody || strings.TrimSpace(mt) == "application/json-patch+json" || strings.Contains(mt, "yaml") {
		pod.Present, pod.ParseError = true, true
		return pod
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		pod.Present, pod.ParseError = true, true
		return pod
	}
	for _, spec := range podSpecs(obj) {
		pod.Present = true
		summarise(pod, spec)
	}
	slices.Sort(pod.Images)
	pod.Images = slices.Compact(pod.Images)
	slices.Sort(pod.Secrets)
	pod.Secrets = slices.Compact(pod.Secrets)
	slices.Sort(pod.HostPaths)
	pod.HostPaths = slices.Compact(pod.HostPaths)
	slices.Sort(pod.Capabilities)
	pod.Capabilities = slices.Compact(pod.Capabilities)
	return pod
}

// podSpecs finds the pod specs in an object: spec (a Pod),
// spec.template.spec, spec.jobTemplate.spec.template.spec, template.spec
// (a PodTemplate).
func podSpecs(obj map[string]any) []map[string]any {
	var out []map[string]any
	add := func(path ...string) {
		var cur any = obj
		for _, p := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				return
			}
			cur = m[p]
		}
		if m, ok := cur.(map[string]any); ok {
			out = append(out, m)
		}
	}
	// Every place a pod spec may be is read, whatever the object says it
	// is: a Pod's spec with a template beside it is still a pod spec, and
	// a workload's own spec read as one only adds what it holds.
	add("spec")
	add("spec", "template", "spec")
	add("spec", "jobTemplate", "spec", "template", "spec")
	add("template", "spec")
	return out
}

func summarise(pod *policyv1.K8SPod, spec map[string]any) {
	pod.HostNetwork = pod.HostNetwork || isTrue(spec["hostNetwork"])
	pod.HostPid = pod.HostPid || isTrue(spec["hostPID"])
	pod.HostIpc = pod.HostIpc || isTrue(spec["hostIPC"])
	for _, k := range []string{"serviceAccountName", "serviceAccount"} {
		if sa, ok := spec[k].(string); ok && sa != "" {
			pod.ServiceAccount = sa
		}
	}
	for _, v := range list(spec["volumes"]) {
		if hp, ok := v["hostPath"].(map[string]any); ok {
			p, _ := hp["path"].(string)
			pod.HostPaths = append(pod.HostPaths, p)
		}
		if sec, ok := v["secret"].(map[string]any); ok {
			name, _ := sec["secretName"].(string)
			pod.Secrets = append(pod.Secrets, name)
		}
		if proj, ok := v["projected"].(map[string]any); ok {
			for _, src := range list(proj["sources"]) {
				if sec, ok := src["secret"].(map[string]any); ok {
					name, _ := sec["name"].(string)
					pod.Secrets = append(pod.Secrets, name)
				}
			}
		}
	}
	for _, key := range []string{"containers", "initContainers", "ephemeralContainers"} {
		for _, c := range list(spec[key]) {
			if img, ok := c["image"].(string); ok {
				pod.Images = append(pod.Images, img)
			}
			for _, e := range list(c["env"]) {
				if vf, ok := e["valueFrom"].(map[string]any); ok {
					if ref, ok := vf["secretKeyRef"].(map[string]any); ok {
						name, _ := ref["name"].(string)
						pod.Secrets = append(pod.Secrets, name)
					}
				}
			}
			for _, e := range list(c["envFrom"]) {
				if ref, ok := e["secretRef"].(map[string]any); ok {
					name, _ := ref["name"].(string)
					pod.Secrets = append(pod.Secrets, name)
				}
			}
			if sc, ok := c["securityContext"].(map[string]any); ok {
				pod.Privileged = pod.Privileged || isTrue(sc["privileged"])
				pod.AllowPrivilegeEscalation = pod.AllowPrivilegeEscalation || isTrue(sc["allowPrivilegeEscalation"])
				if caps, ok := sc["capabilities"].(map[string]any); ok {
					for _, a := range anyList(caps["add"]) {
						if s, ok := a.(string); ok {
							pod.Capabilities = append(pod.Capabilities, s)
						}
					}
				}
			}
		}
	}
}

func isTrue(v any) bool { b, _ := v.(bool); return b }

func anyList(v any) []any { l, _ := v.([]any); return l }

// list is a JSON list's objects.
func list(v any) []map[string]any {
	var out []map[string]any
	for _, e := range anyList(v) {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}
