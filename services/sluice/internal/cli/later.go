package cli

import "github.com/spf13/cobra"

// addLaterCommands registers the commands of the policy, approvals and
// recorder APIs.
func addLaterCommands(root *cobra.Command, g *globals) {
	root.AddCommand(newPolicyCmd(g), newSessionsCmd(g), newReplayCmd(g), newAuditCmd(g),
		newApprovalsCmd(g), newDecideCmd(g, "approve"), newDecideCmd(g, "deny"), newRequestCmd(g), newRevokeCmd(g), newGrantsCmd(g), newConnectCmd(g), newSSHCmd(g))
}
