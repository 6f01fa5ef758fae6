// Package slackbot lets approvers decide held commands and access requests
// from Slack. It follows the approval events (a durable consumer on the
// APPROVALS stream): each new request becomes an interactive message with
// the requester, target, command (or role), rule and reason and Approve /
// Deny buttons; each later transition - decided in Slack or elsewhere,
// expired, consumed - updates that message.
//
// Button clicks arrive on the interactions endpoint. The request signature
// (Slack's v0 HMAC over the timestamp and body, with a five-minute window)
// is verified before anything else; a forged or stale request is refused.
// The Slack user becomes a Sluice principal by configuration or by the
// email address the Slack API reports, and the decision goes to the
// approvals service like any other, which enforces approver groups, quorum
// and no self-approval.
package slackbot
