package bus

import (
	"github.com/nats-io/nats-server/v2/server"
)

// SubjectWorkers is where workers talk among themselves (for example a
// CancelRequest that reached another replica than the session's).
const SubjectWorkers = "sluice.worker"

// protectedStreams may never be deleted, purged, edited or reconfigured by
// the services or workers; only the break-glass admin user can.
var protectedStreams = []string{StreamAudit, StreamControl, StreamApprovals, StreamSessions}

func destructive(stream string) []string {
	return []string{
		"$JS.API.STREAM.DELETE." + stream,
		"$JS.API.STREAM.PURGE." + stream,
		"$JS.API.STREAM.UPDATE." + stream,
		"$JS.API.STREAM.MSG.DELETE." + stream,
		"$JS.API.STREAM.RESTORE." + stream,
	}
}

// ServicePermissions are those of the control-plane services (identity,
// control, policy, approvals, recorder, api, exporter): everything except
// destroying or reconfiguring the protected streams.
func ServicePermissions() *server.Permissions {
	var deny []string
	for _, s := range protectedStreams {
		deny = append(deny, destructive(s)...)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{">"}, Deny: deny},
		Subscribe: &server.SubjectPermission{Allow: []string{">"}},
	}
}

// WorkerPermissions are those of the protocol workers: they publish session
// events and call services, read the control state, and nothing else. They
// cannot write AUDIT or control-plane events, change any stream or bucket,
// or answer service requests (so a compromised worker cannot impersonate
// the identity or policy service).
func WorkerPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: []string{SubjectSessions + ".>", "sluice.api.>", SubjectWorkers + ".>", "$JS.API.>", "$JS.ACK.>", "_INBOX.>"},
			Deny: []string{
				"$JS.API.STREAM.CREATE.>", "$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.DELETE.>",
				"$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>", "$JS.API.STREAM.RESTORE.>",
				"$JS.API.CONSUMER.DELETE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>",
			},
		},
		Subscribe: &server.SubjectPermission{
			Allow: []string{"_INBOX.>", "$JS.>", SubjectWorkers + ".>"},
			Deny:  []string{"sluice.api.>", SubjectSessions + ".>"},
		},
	}
}

// Users builds the three users of a Sluice NATS deployment: "sluice"
// (services), "worker" (protocol workers) and "admin" (break glass, no
// restrictions).
func Users(servicePassword, workerPassword, adminPassword string) []*server.User {
	return []*server.User{
		{Username: "sluice", Password: servicePassword, Permissions: ServicePermissions()},
		{Username: "worker", Password: workerPassword, Permissions: WorkerPermissions()},
		{Username: "admin", Password: adminPassword},
	}
}
