// Package exporter delivers the audit log to SIEMs: syslog (RFC 5424 over
// TCP with octet-counting framing, optionally TLS) and HTTP event
// collectors compatible with Splunk HEC. Beside the session records of
// AUDIT it delivers the control-plane events a SIEM needs and no session
// records: approval requests, every approver's decision and grants
// (APPROVALS), and configuration changes (CONTROL). Each sink has its own
// durable consumer on each of these streams, acknowledged only after the
// sink accepted a batch, so delivery is at least once and resumes where it
// stopped after a restart or an outage. Every exported event carries its
// stable event id, so a duplicate after a retry is recognisable.
//
// Events go out as OCSF 1.1.0 (see auditlog.OCSF and auditlog.OCSFFact)
// or as Sluice JSON; a checkpoint goes out as its anchor.
package exporter
