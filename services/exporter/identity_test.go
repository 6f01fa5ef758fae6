package exporter_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"sluice.dev/sluice/libs/auditlog"
	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/eventstore"
	"sluice.dev/sluice/libs/testkit"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
	auditv1 "sluice.dev/sluice/proto/sluice/audit/v1"
	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
	"sluice.dev/sluice/services/exporter"
)

// Under the NATS permissions of the deployment, the exporter delivers the
// audit log whatever else it may read, and the approvals exactly when its
// identity may read APPROVALS: a stream it may not read costs a warning,
// never the audit log.
func TestExportUnderTheExporterIdentity(t *testing.T) {
	dir := t.TempDir()
	pubs, err := bus.LoadOrCreateKeys(dir)
	require.NoError(t, err)
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), Nkeys: bus.NkeyUsers(pubs)})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	connect := func(component string) *bus.Conn {
		c, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL(), Component: component, NkeyFile: bus.KeyFile(dir, component)})
		require.NoError(t, err)
		t.Cleanup(func() { c.NC.Close() })
		return c
	}
	require.NoError(t, bus.Provision(ctx, connect(bus.CompAdmin).JS, bus.Topology{}))

	// A session's first record, as the recorder writes it.
	ev, err := proto.Marshal(&sessionv1.Event{Id: "01JGSTART", SessionId: "01JGSESSION", Seq: 1, Time: timestamppb.Now(),
		Body: &sessionv1.Event_Started{Started: &sessionv1.Started{Principal: &commonv1.Principal{Subject: "alice"},
			Target: &commonv1.Target{Name: "demo"}, Protocol: "postgres", ClientAddr: "10.1.2.3:5000"}}})
	require.NoError(t, err)
	rec, err := proto.Marshal(&auditv1.Record{SessionId: "01JGSESSION", Seq: 1, EventIds: []string{"01JGSTART"}, Events: [][]byte{ev}})
	require.NoError(t, err)
	_, err = connect(bus.CompRecorder).JS.Publish(ctx, auditlog.SessionSubject("01JGSESSION"), rec)
	require.NoError(t, err)
	// A decision, as the approvals service appends it.
	decided := eventstore.NewEvent("approved", &approvalsv1.RequestApproved{Id: "01JGREQ", Approver: &commonv1.Principal{Subject: "bob"},
		Reason: "ticket OPS-42", Granted: true})
	_, err = eventstore.New(connect(bus.CompApprovals).JS, bus.StreamApprovals, bus.SubjectApprovals).
		Append(ctx, "request", "01JGREQ", eventstore.Position{}, decided)
	require.NoError(t, err)

	sys := newReceiver()
	ectx, ecancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- exporter.Run(ectx, exporter.Config{Conn: connect(bus.CompExporter), Log: zerolog.Nop(),
			Sinks: []exporter.Sink{&exporter.Syslog{Addr: syslogServer(t, sys)}}})
	}()
	testkit.Eventually(t, 20*time.Second, func() error {
		if len(sys.find("01JGSTART", `"class_uid":3002`)) == 0 {
			return fmt.Errorf("the session's start is not exported")
		}
		return nil
	})
	c, err := bus.FindComponent(bus.CompExporter)
	require.NoError(t, err)
	if slices.Contains(c.Reads, bus.StreamApprovals) {
		testkit.Eventually(t, 20*time.Second, func() error {
			if len(sys.find(decided.ID, "bob", "ticket OPS-42")) == 0 {
				return fmt.Errorf("the decision is not exported")
			}
			return nil
		})
	} else {
		// Until the identity table lets the exporter read APPROVALS, the
		// server refuses its consumer there, and the events wait in the
		// stream.
		_, err := connect(bus.CompAdmin).JS.Consumer(ctx, bus.StreamApprovals, bus.ExportDurable("syslog"))
		assert.Error(t, err)
		assert.Empty(t, sys.find(decided.ID))
	}
	ecancel()
	require.NoError(t, <-done, "a stream it may not read does not fail the exporter")
}
