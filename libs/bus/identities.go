package bus

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Component is one kind of Sluice process, with a NATS identity of its own.
// The table below (Components) is the single source of every NATS
// permission: deploy/nats/users.conf is generated from it (cmd: go run
// ./scripts/natsconf), `sluice dev` builds its server's users from it, and a
// test connects as each identity and checks that the server refuses
// everything outside its list.
//
// A component's rights are described by what it does, not by subjects; the
// subjects follow from the topology:
type Component struct {
	// Name is the NATS user (and the inbox token _INBOX.<name>).
	Name string
	// Doc says what it is, for the generated configuration.
	Doc string
	// Serves are request subjects it answers, as a queue group (or, for a
	// request about one session, as the one worker replica that holds it);
	// it may publish only the replies to those requests (allow_responses).
	Serves []string
	// Calls are request subjects it sends.
	Calls []string
	// Owns are the streams and buckets it creates (never updates, purges
	// or deletes: only the break-glass identity may).
	Owns []Store
	// Appends are streams it writes events into.
	Appends []string
	// Reads are streams it reads with ephemeral consumers and direct gets
	// (never touching another component's durable consumer).
	Reads []string
	// Consumes are durable consumers it runs.
	Consumes []Durable
	// ReadsKV and WritesKV are buckets it reads (and watches) or writes.
	ReadsKV, WritesKV []string
	// Publishes and Subscribes are plain subjects (worker to worker).
	Publishes, Subscribes []string
	// Unrestricted is the break-glass identity: no permission applies.
	Unrestricted bool
}

// Store is a stream or a key-value bucket.
type Store struct {
	Stream string
	Bucket string
}

// Durable is a durable consumer on a stream.
type Durable struct {
	Stream, Name string
}

// Component names.
const (
	CompIdentity  = "identity"
	CompControl   = "control"
	CompPolicy    = "policy"
	CompApprovals = "approvals"
	CompRecorder  = "recorder"
	CompAPI       = "api"
	CompExporter  = "exporter"
	CompSlackbot  = "slackbot"
	CompPGWorker  = "pgworker"
	CompSSHWorker = "sshworker"
	CompMCPWorker = "mcpworker"
	CompK8sWorker = "k8sworker"
	CompSIEM      = "siem"
	CompAdmin     = "admin"
)

// Durable consumer names, one owner each.
const (
	DurableControlProjection   = "control-kv"
	DurableApprovalsProjection = "approvals-kv"
	DurableRecorder            = "recorder"
	DurableSlackbot            = "slackbot"
	DurableSIEM                = "siem"
	// BucketSlackbot maps approval requests to their Slack messages.
	BucketSlackbot = "sluice_slackbot"
)

// ExportDurable is the durable consumer of an exporter sink.
func ExportDurable(sink string) string { return "export-" + sink }

// ExportSinks are the exporter's sinks (one durable consumer each).
var ExportSinks = []string{"syslog", "hec"}

// ExportStreams are the streams the exporter delivers, each with one
// durable consumer per sink: the sessions (AUDIT), the approvals and grants
// with who decided and why (APPROVALS), and configuration changes (CONTROL).
var ExportStreams = []string{StreamAudit, StreamApprovals, StreamControl}

func stream(name string) Store { return Store{Stream: name} }
func bucket(name string) Store { return Store{Bucket: name} }

// Components is the identity table.
func Components() []Component {
	exportDurables := []Durable{}
	for _, stream := range ExportStreams {
		for _, s := range ExportSinks {
			exportDurables = append(exportDurables, Durable{stream, ExportDurable(s)})
		}
	}
	return []Component{
		{
			Name: CompIdentity, Doc: "verifies access tokens; signs SSH user certificates for verified tokens",
			Serves:  []string{APIIdentityVerify, APIIdentitySSHSign, APIIdentitySSHAuthority},
			ReadsKV: []string{BucketControl},
		},
		{
			Name: CompControl, Doc: "owns CONTROL: configuration, targets, policies, identity settings",
			Serves:   []string{APIControlApply, APIControlBreakGlass, APIControlTargets},
			Calls:    []string{APIIdentityVerify},
			Owns:     []Store{stream(StreamControl), bucket(BucketControl)},
			Appends:  []string{StreamControl},
			Reads:    []string{StreamControl},
			Consumes: []Durable{{StreamControl, DurableControlProjection}},
			ReadsKV:  []string{BucketControl},
			WritesKV: []string{BucketControl},
		},
		{
			Name: CompPolicy, Doc: "rules on commands with CEL",
			Serves:  []string{APIPolicyEvaluate, APIPolicyTest},
			Calls:   []string{APIIdentityVerify},
			ReadsKV: []string{BucketControl, BucketApprovals},
		},
		{
			Name: CompApprovals, Doc: "owns APPROVALS: held commands and grants",
			Serves: []string{APIApprovalsOpen, APIApprovalsConsume, APIApprovalsWithdraw, APIApprovalsDecide, APIApprovalsSlackDecide,
				APIApprovalsList, APIApprovalsGet, APIGrantsRequest, APIGrantsRevoke},
			Calls:    []string{APIIdentityVerify},
			Owns:     []Store{stream(StreamApprovals), bucket(BucketApprovals), bucket(BucketApprovalsHistory)},
			Appends:  []string{StreamApprovals},
			Reads:    []string{StreamApprovals},
			Consumes: []Durable{{StreamApprovals, DurableApprovalsProjection}},
			ReadsKV:  []string{BucketControl, BucketApprovals, BucketApprovalsHistory},
			WritesKV: []string{BucketApprovals, BucketApprovalsHistory},
		},
		{
			Name: CompRecorder, Doc: "owns SESSIONS and AUDIT: chains session events into the audit log, and closes the chains of sessions whose worker is gone",
			Owns:     []Store{stream(StreamSessions), stream(StreamAudit), bucket(BucketSessions), bucket(BucketAuditKeys), bucket(BucketWorkers)},
			Appends:  []string{StreamAudit},
			Reads:    []string{StreamSessions, StreamAudit},
			Consumes: []Durable{{StreamSessions, DurableRecorder}},
			ReadsKV:  []string{BucketSessions, BucketAuditKeys, BucketWorkers},
			WritesKV: []string{BucketSessions, BucketAuditKeys},
		},
		{
			Name: CompAPI, Doc: "the HTTP API: forwards verified callers to the services, reads the audit log",
			Calls: []string{APIIdentityVerify, APIControlApply, APIControlTargets, APIPolicyTest,
				APIApprovalsDecide, APIApprovalsList, APIApprovalsGet, APIGrantsRequest, APIGrantsRevoke, SubjectPGRenew,
				APIIdentitySSHSign, APIIdentitySSHAuthority, SubjectKill},
			Reads:   []string{StreamAudit},
			ReadsKV: []string{BucketControl, BucketSessions, BucketAuditKeys, BucketWorkers},
		},
		{
			Name: CompExporter, Doc: "delivers AUDIT, APPROVALS and CONTROL to SIEM collectors",
			Reads:    ExportStreams,
			Consumes: exportDurables,
		},
		{
			Name: CompSlackbot, Doc: "approvals from Slack",
			Calls:    []string{APIApprovalsSlackDecide},
			Owns:     []Store{bucket(BucketSlackbot)},
			Consumes: []Durable{{StreamApprovals, DurableSlackbot}},
			ReadsKV:  []string{BucketSlackbot, BucketApprovals},
			WritesKV: []string{BucketSlackbot},
		},
		{
			Name: CompPGWorker, Doc: "the PostgreSQL worker: parses untrusted bytes, so it may do no more than a worker",
			// Renewals come from the API alone: a worker answers them, and
			// never sends one (to another replica's sessions, say).
			Serves:     []string{SubjectPGRenew, SubjectKill},
			Calls:      []string{APIIdentityVerify, APIPolicyEvaluate, APIApprovalsOpen, APIApprovalsConsume, APIApprovalsWithdraw},
			Appends:    []string{StreamSessions},
			ReadsKV:    []string{BucketControl, BucketApprovals},
			WritesKV:   []string{BucketWorkers},
			Publishes:  []string{SubjectPGCancel},
			Subscribes: []string{SubjectPGCancel},
		},
		{
			Name: CompSSHWorker, Doc: "the SSH worker: parses untrusted bytes, so it may do no more than a worker",
			Serves: []string{SubjectKill},
			Calls: []string{APIIdentityVerify, APIIdentitySSHAuthority, APIPolicyEvaluate,
				APIApprovalsOpen, APIApprovalsConsume, APIApprovalsWithdraw},
			Appends:  []string{StreamSessions},
			ReadsKV:  []string{BucketControl, BucketApprovals},
			WritesKV: []string{BucketWorkers},
		},
		{
			Name: CompMCPWorker, Doc: "the MCP worker: serves untrusted clients, so it may do no more than a worker",
			Serves: []string{SubjectKill},
			Calls: []string{APIIdentityVerify, APIPolicyEvaluate,
				APIApprovalsOpen, APIApprovalsConsume, APIApprovalsWithdraw},
			Appends:  []string{StreamSessions},
			ReadsKV:  []string{BucketControl, BucketApprovals},
			WritesKV: []string{BucketWorkers},
		},
		{
			Name: CompK8sWorker, Doc: "the Kubernetes worker: parses untrusted requests, so it may do no more than a worker",
			Serves: []string{SubjectKill},
			// A held request is refused at once and retried: nothing waits
			// that would need withdrawing.
			Calls:    []string{APIIdentityVerify, APIPolicyEvaluate, APIApprovalsOpen, APIApprovalsConsume},
			Appends:  []string{StreamSessions},
			ReadsKV:  []string{BucketControl, BucketApprovals},
			WritesKV: []string{BucketWorkers},
		},
		{
			Name: CompSIEM, Doc: "read-only access to AUDIT for SIEM pipelines that read the stream directly (and verify it: keys, sessions index)",
			Reads:    []string{StreamAudit},
			Consumes: []Durable{{StreamAudit, DurableSIEM}},
			ReadsKV:  []string{BucketAuditKeys, BucketSessions},
		},
		{
			Name: CompAdmin, Doc: "break glass: unrestricted; keep its key offline", Unrestricted: true,
		},
	}
}

// FindComponent returns the component of that name.
func FindComponent(name string) (Component, error) {
	for _, c := range Components() {
		if c.Name == name {
			return c, nil
		}
	}
	return Component{}, fmt.Errorf("no NATS identity %q (identities: %s)", name, strings.Join(ComponentNames(), ", "))
}

// ComponentNames lists every identity.
func ComponentNames() []string {
	var out []string
	for _, c := range Components() {
		out = append(out, c.Name)
	}
	return out
}

// InboxPrefix is where a component's replies arrive; only it may subscribe
// there.
func InboxPrefix(component string) string { return "_INBOX." + component }

// streamSubjects are the subjects a stream of the topology takes.
func streamSubjects(name string) []string {
	for _, cfg := range (Topology{}).streams() {
		if cfg.Name == name {
			return cfg.Subjects
		}
	}
	panic("bus: unknown stream " + name)
}

// KVStream is the stream that holds a key-value bucket.
func KVStream(bucket string) string { return "KV_" + bucket }

// Needs lists the streams and buckets a component uses but does not own:
// it waits for them at start (see Await).
func (c Component) Needs() []Store {
	owned := map[Store]bool{}
	for _, o := range c.Owns {
		owned[o] = true
	}
	seen := map[Store]bool{}
	var out []Store
	add := func(s Store) {
		if !owned[s] && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range c.Appends {
		add(stream(s))
	}
	for _, s := range c.Reads {
		add(stream(s))
	}
	for _, d := range c.Consumes {
		add(stream(d.Stream))
	}
	for _, b := range append(append([]string(nil), c.ReadsKV...), c.WritesKV...) {
		add(bucket(b))
	}
	return out
}

// durables lists every component's durable consumers by stream.
func durables() map[string][]string {
	out := map[string][]string{}
	for _, c := range Components() {
		for _, d := range c.Consumes {
			out[d.Stream] = append(out[d.Stream], d.Name)
		}
	}
	return out
}

// Permissions are the component's NATS permissions; nil for the
// unrestricted break-glass identity.
func (c Component) Permissions() *server.Permissions {
	if c.Unrestricted {
		return nil
	}
	var pub, deny, sub []string
	pub = append(pub, "$JS.API.INFO")
	pub = append(pub, c.Calls...)
	pub = append(pub, c.Publishes...)
	sub = append(sub, InboxPrefix(c.Name)+".>")
	sub = append(sub, c.Serves...)
	sub = append(sub, c.Subscribes...)
	for _, o := range c.Owns {
		name := o.Stream
		if o.Bucket != "" {
			name = KVStream(o.Bucket)
		}
		pub = append(pub, "$JS.API.STREAM.CREATE."+name, "$JS.API.STREAM.INFO."+name)
	}
	for _, s := range c.Appends {
		pub = append(pub, streamSubjects(s)...)
		pub = append(pub, "$JS.API.STREAM.INFO."+s)
	}
	others := durables()
	read := func(s string) {
		pub = append(pub,
			"$JS.API.STREAM.INFO."+s,
			"$JS.API.STREAM.MSG.GET."+s,
			"$JS.API.DIRECT.GET."+s, "$JS.API.DIRECT.GET."+s+".>",
			// Named forms only: the unnamed $JS.API.CONSUMER.CREATE.<s>
			// takes the name from the request body, where no deny can
			// see it (and would reconfigure another's durable).
			"$JS.API.CONSUMER.CREATE."+s+".>",
			"$JS.API.CONSUMER.INFO."+s+".*",
			"$JS.API.CONSUMER.MSG.NEXT."+s+".*",
			"$JS.API.CONSUMER.DELETE."+s+".*",
			"$JS.FC."+s+".>",
		)
		// Ephemeral consumers only: another component's durable consumer
		// is neither taken over, reconfigured, drained nor deleted.
		for _, d := range others[s] {
			if c.consumes(s, d) {
				continue
			}
			deny = append(deny,
				"$JS.API.CONSUMER.CREATE."+s+"."+d, "$JS.API.CONSUMER.CREATE."+s+"."+d+".>",
				"$JS.API.CONSUMER.DURABLE.CREATE."+s+"."+d,
				"$JS.API.CONSUMER.MSG.NEXT."+s+"."+d,
				"$JS.API.CONSUMER.DELETE."+s+"."+d,
			)
		}
	}
	for _, s := range c.Reads {
		read(s)
	}
	for _, b := range c.ReadsKV {
		read(KVStream(b))
	}
	for _, b := range c.WritesKV {
		pub = append(pub, "$KV."+b+".>", "$JS.API.STREAM.INFO."+KVStream(b))
	}
	for _, d := range c.Consumes {
		pub = append(pub,
			"$JS.API.STREAM.INFO."+d.Stream,
			"$JS.API.CONSUMER.CREATE."+d.Stream+"."+d.Name, "$JS.API.CONSUMER.CREATE."+d.Stream+"."+d.Name+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+d.Stream+"."+d.Name,
			"$JS.API.CONSUMER.INFO."+d.Stream+"."+d.Name,
			"$JS.API.CONSUMER.MSG.NEXT."+d.Stream+"."+d.Name,
			"$JS.ACK."+d.Stream+"."+d.Name+".>",
			// The newer acknowledgement subject carries a domain and an
			// account hash first.
			"$JS.ACK.*.*."+d.Stream+"."+d.Name+".>",
		)
	}
	p := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: uniq(pub), Deny: uniq(deny)},
		Subscribe: &server.SubjectPermission{Allow: uniq(sub)},
	}
	if len(c.Serves) > 0 {
		p.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	}
	return p
}

func (c Component) consumes(stream, name string) bool {
	for _, d := range c.Consumes {
		if d.Stream == stream && d.Name == name {
			return true
		}
	}
	return false
}

func uniq(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := append([]string(nil), s...)
	sort.Strings(out)
	n := 1
	for i := 1; i < len(out); i++ {
		if out[i] != out[n-1] {
			out[n] = out[i]
			n++
		}
	}
	return out[:n]
}
