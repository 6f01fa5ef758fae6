package pgworker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/bus"
	"sluice.dev/sluice/libs/devissuer"
	"sluice.dev/sluice/libs/testkit"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
	"sluice.dev/sluice/services/pgworker"
)

// renewSession sends what the API sends for POST /api/v1/sessions/{id}/renew.
func (h *harness) renewSession(id, token string) (*sessionv1.RenewReply, error) {
	ctx, cancel := context.WithTimeout(bus.WithCallerToken(h.ctx, token), 10*time.Second)
	defer cancel()
	var reply sessionv1.RenewReply
	err := bus.Request(ctx, h.conn.NC, bus.SubjectPGRenew, &sessionv1.RenewRequest{SessionId: id}, &reply)
	return &reply, err
}

func (h *harness) mint(sub string, groups []string, ttl time.Duration) string {
	tok, err := h.iss.Mint(devissuer.Claims{Subject: sub, Groups: groups, TTL: ttl})
	require.NoError(h.t, err)
	return tok
}

// sessionEvents reads a session's events from SESSIONS (no recorder runs
// here: the batches stay in the stream).
// A live session is extended by a fresh token of its own principal, on
// whichever replica holds it; every other token is refused and recorded,
// and a refused renewal changes nothing: the session still ends when its
// own token expires.
func TestSessionRenewal(t *testing.T) {
	h := newHarness(t)
	h.worker(pgworker.Config{})
	addr := h.worker(pgworker.Config{}) // renewals reach every replica; this one holds the sessions
	// Long enough that the refusals below (each a few round trips, on a
	// loaded CI machine too) run while the "sooner" token is still valid.
	const life = 8 * time.Second
	start := time.Now()
	renewed, err := h.connect(addr, h.mint("alice", []string{"engineers"}, life))
	require.NoError(t, err)
	defer renewed.Close(h.ctx)
	kept, err := h.connect(addr, h.mint("alice", []string{"engineers"}, life))
	require.NoError(t, err)
	defer kept.Close(h.ctx)
	id := renewed.ParameterStatus(pgworker.ParamSessionID)
	require.Len(t, id, 26, "the client learns its session id")
	keptID := kept.ParameterStatus(pgworker.ParamSessionID)
	require.NotEqual(t, id, keptID)

	for name, c := range map[string]struct {
		token, code string
	}{
		"another subject":             {h.mint("bob", []string{"engineers"}, time.Hour), "forbidden"},
		"other groups":                {h.mint("alice", []string{"engineers", "dba"}, time.Hour), "principal_changed"},
		"an expired token":            {h.mint("alice", []string{"engineers"}, -time.Minute), "token_expired"},
		"not a token":                 {"not-a-jwt", ""},
		"no token":                    {"", "unauthenticated"},
		"a token that expires sooner": {h.mint("alice", []string{"engineers"}, life/2), "not_later"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, sid := range []string{id, keptID} {
				reply, err := h.renewSession(sid, c.token)
				require.NoError(t, err)
				require.NotNil(t, reply.GetError(), "refused")
				if c.code != "" {
					assert.Equal(t, c.code, reply.GetError().GetCode(), reply.GetError().GetMessage())
				}
				assert.Nil(t, reply.GetExpiresAt())
			}
		})
	}

	fresh := h.mint("alice", []string{"engineers"}, time.Hour)
	reply, err := h.renewSession(id, fresh)
	require.NoError(t, err)
	require.Nil(t, reply.GetError(), "%v", reply.GetError())
	assert.WithinDuration(t, time.Now().Add(time.Hour), reply.GetExpiresAt().AsTime(), 5*time.Second)
	again, err := h.renewSession(id, fresh)
	require.NoError(t, err)
	assert.Nil(t, again.GetError(), "renewing twice with the same token is harmless")

	// A session nobody holds gets no answer.
	ctx, cancel := context.WithTimeout(bus.WithCallerToken(h.ctx, fresh), 500*time.Millisecond)
	defer cancel()
	var none sessionv1.RenewReply
	assert.Error(t, bus.Request(ctx, h.conn.NC, bus.SubjectPGRenew, &sessionv1.RenewRequest{SessionId: "01jzzzzzzzzzzzzzzzzzzzzzzz"}, &none))

	// Past the first token's expiry: the renewed session goes on, the
	// other one (refused renewals only) ended on time.
	time.Sleep(time.Until(start.Add(life + 500*time.Millisecond)))
	_, err = renewed.Exec(h.ctx, "SELECT 1").ReadAll()
	require.NoError(t, err, "the renewed session outlives its first token")
	_, err = kept.Exec(h.ctx, "SELECT 1").ReadAll()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "token expired")
	var pe *pgconn.PgError
	if errorAs(err, &pe) {
		assert.Equal(t, "57P01", pe.Code)
	}

	// The audit record: the renewal with its new expiry, each refusal
	// with its reason and, for another principal, who it was.
	var renewals []*sessionv1.TokenRenewed
	refused := map[string]*sessionv1.RenewalRefused{}
	for _, ev := range testkit.SessionEvents(t, h.ctx, h.conn.JS, id) {
		switch b := ev.GetBody().(type) {
		case *sessionv1.Event_TokenRenewed:
			renewals = append(renewals, b.TokenRenewed)
		case *sessionv1.Event_RenewalRefused:
			refused[b.RenewalRefused.GetCode()] = b.RenewalRefused
		}
	}
	require.NotEmpty(t, renewals)
	assert.True(t, renewals[0].GetExpiresAt().AsTime().Equal(reply.GetExpiresAt().AsTime()))
	assert.WithinDuration(t, start.Add(life), renewals[0].GetPreviousExpiresAt().AsTime(), 2*time.Second)
	for _, code := range []string{"forbidden", "principal_changed", "token_expired", "unauthenticated", "not_later"} {
		assert.Contains(t, refused, code)
	}
	assert.Equal(t, "bob", refused["forbidden"].GetSubject())
	assert.Len(t, refused, 6, fmt.Sprint(refused))
	var keptEnd string
	for _, ev := range testkit.SessionEvents(t, h.ctx, h.conn.JS, keptID) {
		_, isRenewal := ev.GetBody().(*sessionv1.Event_TokenRenewed)
		assert.False(t, isRenewal)
		if e := ev.GetEnded(); e != nil {
			keptEnd = e.GetReason()
		}
	}
	assert.Equal(t, "the access token expired", keptEnd)
}
