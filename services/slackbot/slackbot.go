package slackbot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/slack-go/slack"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/libs/approvalstate"
	"sluice.dev/sluice/libs/bus"
	approvalsv1 "sluice.dev/sluice/proto/sluice/approvals/v1"
)

const bucketName = bus.BucketSlackbot

// Config configures the bot.
type Config struct {
	Conn *bus.Conn
	Log  zerolog.Logger
	// BotToken (xoxb-...) and SigningSecret come from the Slack app.
	BotToken, SigningSecret string
	// Channel receives the approval messages.
	Channel string
	// APIURL overrides https://slack.com/api/ (tests).
	APIURL string
	// Addr serves the interactions endpoint (POST /slack/interactions);
	// default 127.0.0.1:8091. Listener overrides it.
	Addr     string
	Listener net.Listener
	// Emails maps Slack user ids to emails; users not listed are
	// identified by the email address Slack reports. A Slack user decides
	// as that email only: approver groups list approvers' emails under
	// subjects. The bot vouches for nothing else (no groups).
	Emails map[string]string
	// Ready, if set, is called once the service serves.
	Ready func()
}

// Bot is the Slack bot.
type Bot struct {
	cfg   Config
	api   *slack.Client
	kv    jetstream.KeyValue
	view  *approvalstate.View
	ready chan struct{}
	addr  string
}

// New returns a bot.
func New(cfg Config) *Bot {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8091"
	}
	opts := []slack.Option{}
	if cfg.APIURL != "" {
		opts = append(opts, slack.OptionAPIURL(cfg.APIURL))
	}
	return &Bot{cfg: cfg, api: slack.New(cfg.BotToken, opts...), view: approvalstate.NewView(), ready: make(chan struct{})}
}

// Ready is closed when the bot serves interactions; Addr is then set.
func (b *Bot) Ready() <-chan struct{} { return b.ready }

// Addr is the interactions listener's address.
func (b *Bot) Addr() string { return b.addr }

// Run serves until ctx is done.
func (b *Bot) Run(ctx context.Context) error {
	if b.cfg.BotToken == "" || b.cfg.SigningSecret == "" || b.cfg.Channel == "" {
		return errors.New("slackbot: a bot token, a signing secret and a channel are required")
	}
	kv, err := bus.EnsureKV(ctx, b.cfg.Conn.JS, jetstream.KeyValueConfig{Bucket: bucketName, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return err
	}
	b.kv = kv
	ln := b.cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", b.cfg.Addr); err != nil {
			return fmt.Errorf("slackbot listen: %w", err)
		}
	}
	b.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /slack/interactions", b.interactions)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.view.Follow(ctx, b.cfg.Conn.JS) })
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	cons, err := bus.Consumer(ctx, b.cfg.Conn.JS, bus.StreamApprovals, jetstream.ConsumerConfig{
		Durable: bus.DurableSlackbot, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1, AckWait: time.Minute,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("slackbot: %w", err)
	}
	g.Go(func() error { return b.follow(ctx, cons) })
	close(b.ready)
	b.cfg.Log.Info().Str("addr", b.addr).Str("channel", b.cfg.Channel).Msg("Slack bot ready")
	if b.cfg.Ready != nil {
		b.cfg.Ready()
	}
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// follow turns approval events into Slack messages and updates.
func (b *Bot) follow(ctx context.Context, cons jetstream.Consumer) error {
	it, err := bus.Messages(cons)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				continue // a lost pull: the iterator pulls again
			}
			return err
		}
		if err := b.onEvent(ctx, m); err != nil {
			b.cfg.Log.Warn().Err(err).Str("subject", m.Subject()).Msg("Slack update failed; will retry")
			_ = m.NakWithDelay(2 * time.Second)
			continue
		}
		_ = m.Ack()
	}
}

// approvalID reads the id from sluice.evt.approvals.<type>.<id>.<event>.
func approvalID(subject string) (id, event string) {
	parts := strings.Split(subject, ".")
	if len(parts) != 6 {
		return "", ""
	}
	return parts[4], parts[5]
}

func (b *Bot) onEvent(ctx context.Context, m jetstream.Msg) error {
	id, event := approvalID(m.Subject())
	if id == "" {
		return nil
	}
	// The folded state may lag the event by a moment.
	var a *approvalsv1.Approval
	for i := 0; i < 50; i++ {
		if cur, ok := b.view.Get(id); ok && stateAfter(cur, event, m.Data()) {
			a = cur
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a == nil {
		return fmt.Errorf("approval %s not visible yet", id)
	}
	switch event {
	case "opened", "requested":
		if a.GetState() != "pending" {
			return nil // decided before the bot saw it (a first start)
		}
		channel, ts, err := b.api.PostMessageContext(ctx, b.cfg.Channel, slack.MsgOptionText(summary(a), true), slack.MsgOptionBlocks(blocks(a, true)...))
		if err != nil {
			return err
		}
		_, err = b.kv.Put(ctx, id, []byte(channel+" "+ts))
		return err
	default:
		ref, err := b.kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil // posted before the bot ran
		}
		if err != nil {
			return err
		}
		channel, ts, _ := strings.Cut(string(ref.Value()), " ")
		_, _, _, err = b.api.UpdateMessageContext(ctx, channel, ts, slack.MsgOptionText(summary(a), true), slack.MsgOptionBlocks(blocks(a, a.GetState() == "pending")...))
		return err
	}
}

// stateAfter reports whether a reflects event, whose message is data.
func stateAfter(a *approvalsv1.Approval, event string, data []byte) bool {
	switch event {
	case "opened", "requested":
		return true
	case "approved":
		// This approval among those counted, not only an earlier one: with
		// a quorum of two, the card would otherwise be left pending.
		// RequestApproved and GrantApproved both carry the approver as
		// field 2.
		var ev approvalsv1.RequestApproved
		if err := proto.Unmarshal(data, &ev); err != nil || ev.GetApprover().GetSubject() == "" {
			return len(a.GetApprovedBy()) > 0
		}
		return slices.Contains(a.GetApprovedBy(), ev.GetApprover().GetSubject())
	case "denied":
		return a.GetState() == "denied"
	case "expired":
		return a.GetState() == "expired"
	case "consumed":
		return a.GetState() == "consumed"
	case "revoked":
		return a.GetState() == "revoked"
	case "withdrawn":
		return a.GetState() == "withdrawn"
	}
	return true
}

func summary(a *approvalsv1.Approval) string {
	if a.GetType() == "grant" {
		return fmt.Sprintf("%s asks for role %s on %s (%s): %s", a.GetRequester().GetSubject(), a.GetRole(), a.GetTarget(), a.GetState(), a.GetReason())
	}
	what, _ := slackExcerpt(a)
	return fmt.Sprintf("%s's statement on %s is %s: %s", a.GetRequester().GetSubject(), a.GetTarget(), a.GetState(), what)
}

// slackExcerpt is as much of a held command as a Slack section shows (3,000
// characters in all), with the command's whole size when it is cut.
func slackExcerpt(a *approvalsv1.Approval) (string, bool) {
	const keep = approvalstate.SlackCardRunes
	cmd := []rune(a.GetCommand())
	if approvalstate.FitsSlackCard(a) {
		return string(cmd), false
	}
	return fmt.Sprintf("%s ... (%d bytes in all)", string(cmd[:min(len(cmd), keep)]), max(a.GetCommandSize(), int64(len(a.GetCommand())))), true
}

// mrkdwn escapes text for a Slack mrkdwn field: no link, mention or
// channel-wide ping comes from what a requester wrote.
func mrkdwn(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// plain is a section of plain text: shown as written, never formatted, so
// a command cannot close a code block and write the rest of the card.
func plain(s string) *slack.SectionBlock {
	return slack.NewSectionBlock(slack.NewTextBlockObject(slack.PlainTextType, s, false, false), nil, nil)
}

// section is a mrkdwn section, verbatim: no name in it becomes a mention
// or a link.
func section(markdown string) *slack.SectionBlock {
	return slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, markdown, false, true), nil, nil)
}

// blocks is a request's card. What a requester wrote (the command, a
// grant's reason) is plain text; a command too long for the card has no
// Approve button: its approver reads it whole in the console or with
// sluice approvals show.
func blocks(a *approvalsv1.Approval, buttons bool) []slack.Block {
	who := mrkdwn(a.GetRequester().GetSubject())
	if a.GetRequester().GetMachine() {
		who += " (machine identity)"
	}
	var out []slack.Block
	cut := false
	if a.GetType() == "grant" {
		out = []slack.Block{
			section(fmt.Sprintf("*Access request* %s", a.GetId())),
			section(fmt.Sprintf("*%s* asks for role *%s* on *%s* for %s, saying:", who, mrkdwn(a.GetRole()), mrkdwn(a.GetTarget()),
				time.Duration(a.GetDurationSeconds())*time.Second)),
			plain(a.GetReason()),
		}
	} else {
		var what string
		what, cut = slackExcerpt(a)
		out = []slack.Block{
			section(fmt.Sprintf("*Held statement* %s", a.GetId())),
			section(fmt.Sprintf("*%s* on *%s*:", who, mrkdwn(a.GetTarget()))),
			plain(what),
			section(fmt.Sprintf("Rule *%s*: %s", mrkdwn(a.GetRule()), mrkdwn(a.GetReason()))),
		}
	}
	if buttons {
		deny := slack.NewButtonBlockElement("deny", a.GetId(), slack.NewTextBlockObject(slack.PlainTextType, "Deny", false, false))
		deny.Style = slack.StyleDanger
		if cut {
			return append(out, section(fmt.Sprintf("Too long to show here whole: read it in the console or with `sluice approvals show %s`, and approve it there.", a.GetId())),
				slack.NewActionBlock("decision", deny))
		}
		approve := slack.NewButtonBlockElement("approve", a.GetId(), slack.NewTextBlockObject(slack.PlainTextType, "Approve", false, false))
		approve.Style = slack.StylePrimary
		return append(out, slack.NewActionBlock("decision", approve, deny))
	}
	status := fmt.Sprintf("*%s*", strings.ToUpper(a.GetState()))
	if a.GetDecidedBy() != "" {
		status += " by " + mrkdwn(a.GetDecidedBy())
	}
	if a.GetDecisionReason() != "" {
		status += ": " + mrkdwn(a.GetDecisionReason())
	}
	return append(out, section(status))
}

// interactions handles button clicks.
func (b *Bot) interactions(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	sv, err := slack.NewSecretsVerifier(r.Header, b.cfg.SigningSecret)
	if err == nil {
		_, _ = sv.Write(body)
		err = sv.Ensure()
	}
	if err != nil {
		b.cfg.Log.Warn().Str("remote", r.RemoteAddr).Msg("Slack request with a bad signature refused")
		actions.WithLabelValues("bad_signature").Inc()
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	cb, err := slack.InteractionCallbackParse(r)
	if err != nil {
		http.Error(w, "malformed interaction", http.StatusBadRequest)
		return
	}
	for _, act := range cb.ActionCallback.BlockActions {
		if act.ActionID != "approve" && act.ActionID != "deny" {
			continue
		}
		email, err := b.email(r.Context(), cb.User.ID)
		if err != nil {
			b.cfg.Log.Warn().Err(err).Str("slack_user", cb.User.ID).Msg("cannot identify Slack user")
			actions.WithLabelValues("unknown_user").Inc()
			writeText(w, "Sluice cannot tell who you are; no decision was recorded.")
			return
		}
		var reply approvalsv1.ApprovalReply
		err = bus.Request(r.Context(), b.cfg.Conn.NC, bus.APIApprovalsSlackDecide, &approvalsv1.SlackDecide{Id: act.Value, Email: email, Verdict: act.ActionID, Reason: "via Slack"}, &reply)
		switch {
		case err != nil:
			actions.WithLabelValues("unavailable").Inc()
			writeText(w, "The approvals service did not answer; try again.")
		case reply.GetError() != nil:
			actions.WithLabelValues("refused").Inc()
			writeText(w, "Not recorded: "+reply.GetError().GetMessage())
		default:
			actions.WithLabelValues("recorded").Inc()
			writeText(w, fmt.Sprintf("Recorded: %s %s.", act.ActionID, act.Value))
		}
		return
	}
	w.WriteHeader(http.StatusOK)
}

// email identifies a Slack user by email.
func (b *Bot) email(ctx context.Context, userID string) (string, error) {
	if e, ok := b.cfg.Emails[userID]; ok {
		return e, nil
	}
	info, err := b.api.GetUserInfoContext(ctx, userID)
	if err != nil {
		return "", err
	}
	email := info.Profile.Email
	if email == "" || info.Deleted || info.IsBot {
		return "", fmt.Errorf("slack user %s has no usable email", userID)
	}
	return email, nil
}

func writeText(w http.ResponseWriter, text string) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"response_type":"ephemeral","replace_original":false,"text":%q}`, text)
}
