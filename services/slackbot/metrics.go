package slackbot

import (
	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/libs/telemetry"
)

// actions counts the Approve and Deny clicks the bot handled.
var actions = telemetry.Factory.NewCounterVec(prometheus.CounterOpts{
	Name: "sluice_slack_actions_total",
	Help: "Slack decisions (Approve or Deny clicks), by result: recorded, refused (by the approvals service), " +
		"unavailable (no answer), unknown_user (no usable email) or bad_signature (not from Slack).",
}, []string{"result"})
