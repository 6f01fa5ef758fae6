package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
	"sluice.dev/sluice/services/approvals"
	"sluice.dev/sluice/services/control"
)

// projection is a bucket that is a fold of a stream.
type projection struct {
	name, bucket, stream, about string
	// fold computes what the bucket must hold, from the stream's first
	// message.
	fold func(ctx context.Context, js jetstream.JetStream) (map[string][]byte, error)
	// same says whether two values are the same state (nil: equal bytes).
	same func(a, b []byte) bool
}

func projections() []projection {
	return []projection{
		{"control", bus.BucketControl, bus.StreamControl, "targets, policy, approver groups, identity provider, access", control.Fold, nil},
		{"approvals", bus.BucketApprovals, bus.StreamApprovals, "approval requests and grants, the hot view",
			func(ctx context.Context, js jetstream.JetStream) (map[string][]byte, error) {
				hot, _, err := approvals.Fold(ctx, js)
				if err != nil {
					return nil, err
				}
				return marshalAll(hot)
			}, sameAs(func() proto.Message { return &approvalsv1.Approval{} })},
		{"approvals-history", bus.BucketApprovalsHistory, bus.StreamApprovals, "approval requests and grants retired from the hot view",
			func(ctx context.Context, js jetstream.JetStream) (map[string][]byte, error) {
				_, history, err := approvals.Fold(ctx, js)
				if err != nil {
					return nil, err
				}
				return marshalAll(history)
			}, sameAs(func() proto.Message { return &approvalsv1.Approval{} })},
		{"sessions", bus.BucketSessions, bus.StreamAudit, "the sessions index",
			func(ctx context.Context, js jetstream.JetStream) (map[string][]byte, error) {
				folded, err := auditlog.Summaries(ctx, js)
				if err != nil {
					return nil, err
				}
				return marshalAll(folded)
			}, sameAs(func() proto.Message { return &sessionv1.Summary{} })},
	}
}

func marshalAll[M proto.Message](m map[string]M) (map[string][]byte, error) {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(v)
		if err != nil {
			return nil, err
		}
		out[k] = b
	}
	return out, nil
}

func sameAs(newMsg func() proto.Message) func(a, b []byte) bool {
	return func(a, b []byte) bool {
		if bytes.Equal(a, b) {
			return true
		}
		x, y := newMsg(), newMsg()
		return proto.Unmarshal(a, x) == nil && proto.Unmarshal(b, y) == nil && proto.Equal(x, y)
	}
}

// reprojection is what rebuilding one projection found and did.
type reprojection struct {
	Name    string `json:"name"`
	Keys    int    `json:"keys"`
	Missing int    `json:"missing"`
	Changed int    `json:"changed"`
	Extra   int    `json:"extra"`
	// Skipped are keys a live writer changed while the fold was made:
	// theirs is newer.
	Skipped int  `json:"skipped"`
	DryRun  bool `json:"dry_run"`
}

// reproject makes p's bucket equal its fold: missing keys written, changed
// ones put back, extra ones deleted. The bucket is read first, each key
// with its revision (delete markers included), and only then folded; every
// write is conditional on the revision read, so that anything a service
// wrote meanwhile, before or after the fold, stays: it is newer than both.
func reproject(ctx context.Context, js jetstream.JetStream, p projection, dryRun bool) (reprojection, error) {
	r := reprojection{Name: p.name, DryRun: dryRun}
	kv, err := js.KeyValue(ctx, p.bucket)
	if err != nil {
		return r, fmt.Errorf("%s: bucket %s: %w", p.name, p.bucket, err)
	}
	have, err := snapshotBucket(ctx, kv)
	if err != nil {
		return r, fmt.Errorf("%s: read %s: %w", p.name, p.bucket, err)
	}
	want, err := p.fold(ctx, js)
	if err != nil {
		return r, fmt.Errorf("%s: fold %s: %w", p.name, p.stream, err)
	}
	r.Keys = len(want)
	same := p.same
	if same == nil {
		same = bytes.Equal
	}
	// written settles a write: a revision conflict means a service wrote
	// the key since it was read, and its value, newer than the fold,
	// stays; any other error fails the rebuild.
	written := func(_ uint64, err error) error {
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			return nil
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists),
			errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
				apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
			r.Skipped++
			return nil
		}
		return fmt.Errorf("%s: %w", p.name, err)
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e, ok := have[k]
		switch {
		case !ok || e.deleted:
			r.Missing++
			if !dryRun {
				// Revision 0: the key never existed; else its delete
				// marker's.
				if err := written(kv.Update(ctx, k, want[k], e.revision)); err != nil {
					return r, err
				}
			}
		case !same(e.value, want[k]):
			r.Changed++
			if !dryRun {
				if err := written(kv.Update(ctx, k, want[k], e.revision)); err != nil {
					return r, err
				}
			}
		}
	}
	for k, e := range have {
		if _, ok := want[k]; ok || e.deleted {
			continue
		}
		r.Extra++
		if !dryRun {
			if err := written(0, kv.Delete(ctx, k, jetstream.LastRevision(e.revision))); err != nil {
				return r, err
			}
		}
	}
	return r, nil
}

// bucketEntry is a key as the bucket holds it now.
type bucketEntry struct {
	value    []byte
	revision uint64
	deleted  bool
}

// snapshotBucket reads every key's latest entry, delete markers included,
// with one watch.
func snapshotBucket(ctx context.Context, kv jetstream.KeyValue) (map[string]bucketEntry, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, err
	}
	defer w.Stop() //nolint:errcheck
	out := map[string]bucketEntry{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("the watch ended before the bucket was read")
			}
			if e == nil {
				return out, nil // every key's latest entry delivered
			}
			out[e.Key()] = bucketEntry{value: e.Value(), revision: e.Revision(), deleted: e.Operation() != jetstream.KeyValuePut}
		}
	}
}

func newAdminReprojectCmd(g *globals) *cobra.Command {
	var url, nkeyFile, caFile string
	var dryRun bool
	names := []string{}
	for _, p := range projections() {
		names = append(names, p.name)
	}
	cmd := &cobra.Command{
		Use:   "reproject control|approvals|approvals-history|sessions|all --nats-nkey-file admin.nk",
		Short: "Rebuild a projection (a read model) from the stream it folds",
		Long: `Rebuild a projection from its stream, as the break-glass NATS identity: the control
bucket from CONTROL, the approvals bucket from APPROVALS, the sessions index from AUDIT.
The bucket is read first (every key with its revision), then the fold is computed from
the stream's first message, and the bucket is made equal to it: missing keys written,
changed ones put back, extra ones deleted. Each write is conditional on the revision
read, so whatever a service wrote meanwhile (a new session, a decision, a removed target)
stays: it is newer than both. --dry-run only counts. A projection that is whole reports
nothing to do; a failed write is an error, never counted as done.`,
		Example: `  sluice admin reproject all --nats tls://nats-1:4222 --nats-ca ca.pem --nats-nkey-file admin.nk --dry-run
  sluice admin reproject sessions --nats-nkey-file admin.nk`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: append(names, "all"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var todo []projection
			for _, p := range projections() {
				if args[0] == "all" || args[0] == p.name {
					todo = append(todo, p)
				}
			}
			if len(todo) == 0 {
				return usage("unknown projection %q (projections: control, approvals, approvals-history, sessions, or all)", args[0])
			}
			if nkeyFile == "" {
				return usage("--nats-nkey-file is required: the break-glass identity's seed (admin.nk)")
			}
			ctx := cmd.Context()
			conn, err := breakGlass(ctx, url, nkeyFile, caFile, "reproject")
			if err != nil {
				return err
			}
			defer conn.Close()
			var done []reprojection
			for _, p := range todo {
				r, err := reproject(ctx, conn.JS, p, dryRun)
				if err != nil {
					return err
				}
				done = append(done, r)
			}
			if g.json() {
				return g.printJSON(map[string]any{"projections": done})
			}
			for _, r := range done {
				verb := "rebuilt"
				if r.DryRun {
					verb = "would rebuild"
				}
				if r.Missing+r.Changed+r.Extra == 0 {
					fmt.Fprintf(g.stdout, "%s: whole (%d keys)\n", r.Name, r.Keys)
					continue
				}
				fmt.Fprintf(g.stdout, "%s: %s: %d missing, %d changed, %d extra of %d keys", r.Name, verb, r.Missing, r.Changed, r.Extra, r.Keys)
				if r.Skipped > 0 {
					fmt.Fprintf(g.stdout, " (%d left to a service that wrote meanwhile)", r.Skipped)
				}
				fmt.Fprintln(g.stdout)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "only count what differs")
	f.StringVar(&url, "nats", envOr("SLUICE_NATS", "nats://127.0.0.1:4222"), "NATS server URL(s) ($SLUICE_NATS)")
	f.StringVar(&nkeyFile, "nats-nkey-file", os.Getenv("SLUICE_NATS_NKEY_FILE"), "the break-glass identity's nkey seed (admin.nk)")
	f.StringVar(&caFile, "nats-ca", os.Getenv("SLUICE_NATS_CA"), "CA file to verify NATS (TLS)")
	return cmd
}
