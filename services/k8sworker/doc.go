// Package k8sworker is Sluice's Kubernetes API gateway: unmodified kubectl
// (and every client-go program) talks to it as to a cluster, at
// https://HOST:16443/targets/NAME, with an access token from an exec
// credential plugin (sluice kubeconfig writes one that runs sluice token).
//
// Every request is classified (libs/kubeclass: verb, API group, resource,
// subresource, namespace, name, and exec's command) and ruled on by the
// policy service; the client's Authorization and every Impersonate-*
// header are removed and the gateway's own credential set (with the
// principal impersonated into the cluster's RBAC when the target says so),
// so no credential of the cluster reaches a client and no client chooses
// who it is there. A request's record is durable before it reaches the
// cluster. A denial is a Kubernetes Status (403) that kubectl prints with
// the rule. A held request is refused at once with the approval to ask
// for; the same request, retried by the same principal once approved,
// runs once (the approval is bound to its method, path, query and body).
// Responses of a principal whose policy masks: Secret values are redacted
// and the value detectors run on every string (JSON, watch streams, logs);
// clients are asked for JSON, never protobuf, so nothing passes unread.
//
// exec, attach and port-forward streams (websockets; SPDY is refused) are
// relayed message by message and recorded by channel.
//
// worker.go is the listener and target plumbing, proxy.go a request's
// path, mask.go the responses, stream.go streams, hold.go approvals.
package k8sworker
