package testkit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sluice.dev/sluice/libs/bus"
	identityv1 "sluice.dev/sluice/proto/sluice/identity/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// IdentityAndPolicyAnswer waits until the identity and policy services
// answer on nc, the policy service with a policy applied (a revision): a
// worker serves before they do (refusing meanwhile), and a policy service
// that answers before its view holds the policy denies everything, so a
// test that starts them in goroutines waits here before it connects.
func IdentityAndPolicyAnswer(t testing.TB, ctx context.Context, nc *nats.Conn) {
	t.Helper()
	Eventually(t, 20*time.Second, func() error {
		var v identityv1.VerifyTokenResponse
		if err := bus.Request(ctx, nc, bus.APIIdentityVerify, &identityv1.VerifyTokenRequest{Token: "x"}, &v); err != nil {
			return err
		}
		var d policyv1.Decision
		if err := bus.Request(ctx, nc, bus.APIPolicyEvaluate, &policyv1.EvaluateRequest{Command: &policyv1.EvaluateRequest_Sql{Sql: &policyv1.SQLCommand{Text: "SELECT 1"}}}, &d); err != nil {
			return err
		}
		if d.GetRevision() == 0 {
			return fmt.Errorf("the policy service has no policy yet: %s", d.GetReason())
		}
		return nil
	})
}
