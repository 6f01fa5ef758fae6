// Package exporter delivers the audit log to SIEMs: syslog (RFC 5424 over
// TCP with octet-counting framing, optionally TLS) and HTTP event
// collectors compatible with Splunk HEC. Each sink has its own durable
// consumer on AUDIT, acknowledged only after the sink accepted a batch, so
// delivery is at least once and resumes where it stopped after a restart or
// an outage. Every exported event carries its stable event id, so a
// duplicate after a retry is recognisable.
package exporter
