package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// browser is one Chromium of its own (its own cookies), headless.
type browser struct {
	t   *testing.T
	ctx context.Context
	api string
}

func newBrowser(t *testing.T, api string) *browser {
	t.Helper()
	requireTool(t, "chromium")
	path, _ := exec.LookPath("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	require.NoError(t, chromedp.Do(ctx)) // starts the browser, with no deadline
	return &browser{t: t, ctx: ctx, api: api}
}

// try runs steps with a deadline.
func (b *browser) try(timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

func (b *browser) must(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	require.NoError(b.t, b.try(30*time.Second, steps...))
}

// text is the text of the first element matching a CSS selector.
func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(b.t, err, sel)
	return v
}

// evalJS evaluates JavaScript in the page, awaiting a promise it returns.
func evalJS[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	require.NoError(b.t, err, js)
	return v
}

// until waits for a JavaScript condition.
func (b *browser) until(js string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](js))
	require.NoError(b.t, err, js)
}

// signIn goes through the console's sign-in: the dev issuer's page, as sub
// with groups.
func (b *browser) signIn(sub, groups string) {
	b.t.Helper()
	b.must(
		chromedp.Navigate(b.api+"/"),
		chromedp.WaitVisible(chromedp.ID("signin")),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("sub")),
		chromedp.SetValue(chromedp.ID("sub"), sub),
		chromedp.SetValue(chromedp.ID("groups"), groups),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("principal")),
	)
	require.Equal(b.t, sub, b.text("#principal"))
}

// screenshot saves the page when SLUICE_SCREENSHOTS names a directory
// (README's pictures: SLUICE_SCREENSHOTS=$PWD/docs go test -run TestConsole ./e2e).
func (b *browser) screenshot(name string) {
	dir := os.Getenv("SLUICE_SCREENSHOTS")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(b.t, err)
	require.NoError(b.t, os.WriteFile(filepath.Join(dir, name), png, 0o644))
}

// sessionCookie is the console's cookie, as the browser keeps it.
func (b *browser) sessionCookie() *network.Cookie {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{})
	require.NoError(b.t, err)
	for _, c := range res.Cookies {
		if c.Name == "sluice_console" {
			return c
		}
	}
	b.t.Fatal("no console session cookie")
	return nil
}

// TestConsole walks the web console in a real browser: an approver signs in
// through the dev issuer and sees a held psql statement appear without
// reloading, approves it, and the statement runs; an auditor finds the
// session, reads its transcript and its chain's verification, and cannot
// approve; a recorded <script> shows as text; the console refuses framing,
// inline script and cross-site writes.
func TestConsole(t *testing.T) {
	requireTool(t, "psql", "chromium", "ssh", "sshd")
	env := startDev(t, devOptions{})
	alice := env.Token("--sub", "alice", "--groups", "engineers")
	dsn := fmt.Sprintf("host=%s port=%d dbname=demo user=alice sslmode=require password=%s", env.PGHost, env.PGPort, alice)
	psql := psqlAt(t, dsn)

	// Headers every console page carries.
	resp, err := http.Get(env.API + "/console/")
	require.NoError(t, err)
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	assert.Contains(t, csp, "script-src 'self'")
	assert.Contains(t, csp, "frame-ancestors 'none'")
	assert.NotContains(t, csp, "unsafe-inline")
	assert.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
	assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))

	approver := newBrowser(t, env.API)
	approver.signIn("bob", "approvers")
	approver.must(chromedp.WaitVisible(chromedp.ID("empty")))
	approver.until(`document.querySelector("#live").textContent.includes("live")`)
	c := approver.sessionCookie()
	assert.True(t, c.HTTPOnly, "the session cookie is HttpOnly")
	assert.Equal(t, network.CookieSameSiteLax, c.SameSite)
	assert.NotContains(t, c.Value, ".", "the cookie is sealed, not the token itself")

	// A write from another origin, or without the CSRF token, is refused
	// even with the session cookie.
	for name, hdr := range map[string]map[string]string{
		"no CSRF token":    {},
		"wrong CSRF token": {"X-Sluice-CSRF": "forged"},
	} {
		req, _ := http.NewRequest(http.MethodPost, env.API+"/api/v1/grants", strings.NewReader(`{"target":"demo","role":"writer","duration":"10m","reason":"x"}`))
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, name)
	}
	csrfOK := evalJS[int](approver, `(async () => { const s = await (await fetch("/api/v1/console/session")).json();
		const r = await fetch("/api/v1/policy/test", {method: "POST", headers: {"X-Sluice-CSRF": s.csrf, "Content-Type": "application/json"},
			body: JSON.stringify({subject: "carol", groups: ["engineers"], target: "demo", sql: "SELECT 1"})});
		return r.status; })()`)
	assert.Equal(t, http.StatusOK, csrfOK, "the console's own request with its token passes the CSRF check")

	// A held DELETE appears in the open inbox without a reload.
	evalJS[bool](approver, `window.__notReloaded = true`)
	held := make(chan string, 1)
	go func() {
		out, err := psql("DELETE FROM orders")
		if err != nil {
			out += err.Error()
		}
		held <- out
	}()
	approver.must(chromedp.WaitVisible(chromedp.CSS(".approval pre.cmd")))
	assert.Contains(t, approver.text(".approval pre.cmd"), "DELETE FROM orders")
	assert.Equal(t, "alice", approver.text(".approval .requester"))
	assert.True(t, evalJS[bool](approver, `window.__notReloaded === true`), "the held statement appeared without reloading the page")
	approver.screenshot("console-inbox.png")

	// An auditor sees the request but may not decide it.
	auditor := newBrowser(t, env.API)
	auditor.signIn("audrey", "auditors")
	auditor.must(chromedp.WaitVisible(chromedp.CSS(".approval pre.cmd")))
	assert.Zero(t, evalJS[int](auditor, `document.querySelectorAll(".approval button.approve").length`), "an auditor gets no approve button")
	forbidden := evalJS[int](auditor, `(async () => { const s = await (await fetch("/api/v1/console/session")).json();
		const id = document.querySelector(".approval").dataset.id;
		const r = await fetch("/api/v1/approvals/" + id + "/approve", {method: "POST", headers: {"X-Sluice-CSRF": s.csrf, "Content-Type": "application/json"}, body: "{}"});
		return r.status; })()`)
	assert.Equal(t, http.StatusForbidden, forbidden, "the approvals service refuses an auditor's approval")

	// The approver approves; the statement runs.
	approver.must(
		chromedp.SetValue(chromedp.CSS(".approval input[name=reason]"), "cleanup ticket 42"),
		chromedp.Click(chromedp.CSS(".approval button.approve")),
		chromedp.WaitVisible(chromedp.ID("empty")),
	)
	select {
	case out := <-held:
		assert.Contains(t, out, "DELETE ", "the approved statement ran")
	case <-time.After(30 * time.Second):
		t.Fatal("the approved DELETE did not finish")
	}

	// A statement that carries markup.
	out, err := psql(`SELECT '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">' AS x`)
	require.NoError(t, err, out)

	// The auditor finds both sessions, opens them: transcripts, chains.
	auditor.must(
		chromedp.Navigate(env.API+"/console/#/sessions"),
		chromedp.WaitVisible(chromedp.ID("sessions")),
		chromedp.SetValue(chromedp.CSS(`#filters select[name=outcome]`), "held"),
		chromedp.Click(chromedp.CSS(`#filters button[type=submit]`)),
	)
	auditor.until(`document.querySelector("#results").dataset.query?.includes("held=true") && document.querySelectorAll("#sessions .session-row").length === 1`)
	auditor.must(
		chromedp.Click(chromedp.CSS("#sessions .session-row a")),
		chromedp.WaitVisible(chromedp.ID("transcript")),
	)
	auditor.until(`document.querySelector("#chain") !== null`)
	transcript, chain := auditor.text("#transcript"), auditor.text("#chain")
	assert.Contains(t, transcript, "DELETE FROM orders")
	assert.Contains(t, transcript, "approved by bob and run — cleanup ticket 42")
	assert.Contains(t, chain, "audit chain verified")
	auditor.screenshot("console-session.png")

	auditor.must(
		chromedp.Navigate(env.API+"/console/#/sessions"),
		chromedp.WaitVisible(chromedp.ID("sessions")),
		chromedp.SetValue(chromedp.CSS(`#filters select[name=outcome]`), ""),
		chromedp.Click(chromedp.CSS(`#filters button[type=submit]`)),
	)
	auditor.until(`!document.querySelector("#results").dataset.query?.includes("held=true") && document.querySelectorAll("#sessions .session-row").length >= 2`)
	auditor.must(
		chromedp.Click(chromedp.CSS("#sessions .session-row a")), // newest first: the markup
		chromedp.WaitVisible(chromedp.ID("transcript")),
	)
	assert.Contains(t, auditor.text("#transcript"), `<script>window.__pwned = 1</script>`, "the statement shows as text")
	assert.True(t, evalJS[bool](auditor, `window.__pwned === undefined`), "no recorded value ran as script")
	assert.Zero(t, evalJS[int](auditor, `document.querySelectorAll("#transcript script, #transcript img").length`), "no recorded value became an element")

	// An SSH session's page plays its terminal back.
	stdout, stderr, code := sshLogin(t, env, "--sub", "alice", "--groups", "engineers").exec("echo console-terminal-check")
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "console-terminal-check")
	auditor.must(
		chromedp.Navigate(env.API+"/console/#/sessions"),
		chromedp.WaitVisible(chromedp.ID("sessions")),
		chromedp.SetValue(chromedp.CSS(`#filters select[name=protocol]`), "ssh"),
		chromedp.Click(chromedp.CSS(`#filters button[type=submit]`)),
	)
	auditor.until(`document.querySelector("#results").dataset.query?.includes("protocol=ssh") && document.querySelectorAll("#sessions .session-row").length === 1`)
	auditor.must(chromedp.Click(chromedp.CSS("#sessions .session-row a")), chromedp.WaitVisible(chromedp.ID("terminal")))
	assert.Contains(t, auditor.text("#terminal"), "console-terminal-check")

	// Grants: alice requests elevation in her browser, bob approves it in
	// his live inbox, alice sees it in force and revokes it.
	engineer := newBrowser(t, env.API)
	engineer.signIn("alice", "engineers")
	engineer.must(
		chromedp.Navigate(env.API+"/console/#/grants"),
		chromedp.WaitVisible(chromedp.ID("grant-form")),
		chromedp.SetValue(chromedp.CSS(`#grant-form input[name=role]`), "writer"),
		chromedp.SetValue(chromedp.CSS(`#grant-form input[name=duration]`), "30m"),
		chromedp.SetValue(chromedp.CSS(`#grant-form input[name=reason]`), "backfill ORD-7"),
		chromedp.Click(chromedp.CSS(`#grant-form button[type=submit]`)),
	)
	engineer.until(`document.querySelector(".notice, .error") !== null`)
	require.Contains(t, engineer.text("#main"), "Requested", "the grant request was taken")
	approver.must(chromedp.Navigate(env.API + "/console/#/inbox"))
	approver.until(`[...document.querySelectorAll(".approval h3")].some(h => h.textContent.includes("Grant of writer on demo"))`)
	approver.must(chromedp.Click(chromedp.CSS(".approval button.approve")), chromedp.WaitVisible(chromedp.ID("empty")))
	engineer.must(chromedp.Navigate(env.API+"/console/#/inbox"), chromedp.Navigate(env.API+"/console/#/grants"), chromedp.WaitVisible(chromedp.ID("grants")))
	engineer.until(`document.querySelector("#grants").textContent.includes("active")`)
	engineer.must(chromedp.Click(chromedp.CSS(`#grants button`)))
	engineer.until(`document.querySelector("#grants")?.textContent.includes("revoked")`)

	// The policy playground rules without running anything.
	approver.must(
		chromedp.Navigate(env.API+"/console/#/playground"),
		chromedp.WaitVisible(chromedp.ID("playground")),
		chromedp.SetValue(chromedp.CSS(`#playground input[name=subject]`), "alice"),
		chromedp.SetValue(chromedp.CSS(`#playground input[name=groups]`), "engineers"),
		chromedp.SetValue(chromedp.CSS(`#playground select[name=target]`), "demo"),
		chromedp.SetValue(chromedp.CSS(`#playground textarea`), "DELETE FROM customers"),
		chromedp.Click(chromedp.CSS(`#playground button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("#verdict .card")),
	)
	verdict := approver.text("#verdict")
	assert.Contains(t, verdict, "review")
	assert.Contains(t, verdict, "review-unbounded-writes")

	// Pages follow the groups: the approver has no sessions page.
	approver.must(chromedp.Navigate(env.API+"/console/#/sessions"), chromedp.WaitVisible(chromedp.ID("forbidden")))
	assert.NotContains(t, approver.text("#nav"), "Sessions")
	assert.Contains(t, auditor.text("#nav"), "Sessions")

	// Signing out drops the session cookie: the page's calls are refused.
	approver.must(chromedp.Navigate(env.API+"/console/#/inbox"), chromedp.WaitVisible(chromedp.ID("signout")),
		chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("signin")))
	assert.Equal(t, http.StatusUnauthorized, evalJS[int](approver, `fetch("/api/v1/console/session").then(r => r.status)`))
}
