package masking

import (
	"strings"
	"testing"
)

func TestAWSKey(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	m := only(t, Config{}, AWSKey)
	runDetCases(t, m, []detCase{
		{"akia", "AKIAIOSFODNN7EXAMPLE", []string{"AKIAIOSFODNN7EXAMPLE"}},
		{"asia", "key=ASIAY34FZKBOKMUTVV7A;", []string{"ASIAY34FZKBOKMUTVV7A"}},
		{"json", `{"AccessKeyId":"ASIAY34FZKBOKMUTVV7A"}`, []string{"ASIAY34FZKBOKMUTVV7A"}},
		{"ini secret", "aws_secret_access_key = " + secret, []string{secret}},
		{"env secret", "AWS_SECRET_ACCESS_KEY=" + secret + "\n", []string{secret}},
		{"sts json secret", `{"SecretAccessKey": "` + secret + `"}`, []string{secret}},
		{"escaped json secret", `{\"SecretAccessKey\":\"` + secret + `\"}`, []string{secret}},
		{"id and secret", "AKIAIOSFODNN7EXAMPLE aws_secret_access_key=" + secret, []string{"AKIAIOSFODNN7EXAMPLE", secret}},
		// near misses
		{"short id", "AKIAIOSFODNN7EXAMPL", nil},
		{"long id", "AKIAIOSFODNN7EXAMPLEX", nil},
		{"lowercase id", "akiaiosfodnn7example", nil},
		{"other prefix", "AIDAIOSFODNN7EXAMPLE", nil},
		{"inside token", "XAKIAIOSFODNN7EXAMPLE", nil},
		{"secret without context", secret, nil},
		{"short secret", "aws_secret_access_key=" + secret[:39], nil},
		{"long secret", "aws_secret_access_key=" + secret + "A", nil},
	})
}

func TestGitHubToken(t *testing.T) {
	body := "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
	pat := "github_pat_11ABCDEFG0123456789abcd_" + strings.Repeat("Ab9", 19) + "xy"
	m := only(t, Config{}, GitHubToken)
	runDetCases(t, m, []detCase{
		{"ghp", "ghp_" + body, []string{"ghp_" + body}},
		{"gho", "token=gho_" + body + "&x", []string{"gho_" + body}},
		{"ghu ghs ghr", "ghu_" + body + " ghs_" + body + " ghr_" + body, []string{"ghu_" + body, "ghs_" + body, "ghr_" + body}},
		{"fine grained", "GITHUB_TOKEN=" + pat, []string{pat}},
		{"json", `{"token":"ghp_` + body + `"}`, []string{"ghp_" + body}},
		// near misses
		{"short", "ghp_" + body[:35], nil},
		{"unknown kind", "ghx_" + body, nil},
		{"inside word", "xghp_" + body, nil},
		{"continues", "ghp_" + body + "_x", nil},
		{"short pat", "github_pat_abc", nil},
		{"prose", "github_pat_ is the prefix", nil},
	})
}

func TestOpenAIKey(t *testing.T) {
	legacy := "sk-" + "T3BlbkFJ" + strings.Repeat("a1B2", 10)
	proj := "sk-proj-" + strings.Repeat("Xy9_-Ab3", 20)
	m := only(t, Config{}, OpenAIKey)
	runDetCases(t, m, []detCase{
		{"legacy", legacy, []string{legacy}},
		{"project", "OPENAI_API_KEY=" + proj, []string{proj}},
		{"json", `{"key":"` + legacy + `"}`, []string{legacy}},
		// near misses
		{"hyphenated words", "sk-learn-model-selection-utilities-for-ml", nil},
		{"short", "sk-abc123", nil},
		{"inside word", "task-" + strings.Repeat("a1B2", 10), nil},
		{"only digits", "sk-" + strings.Repeat("1", 40), nil},
	})
}

func TestSlackToken(t *testing.T) {
	bot := "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
	user := "xoxp-1234567890-1234567890-1234567890123-0123456789abcdef0123456789abcdef"
	app := "xapp-1-A0123456789-1234567890123-abcdef0123456789"
	rot := "xoxe.xoxp-1-Mi0yLTEyMzQ1Njc4OTA"
	hook := "hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
	m := only(t, Config{}, SlackToken)
	runDetCases(t, m, []detCase{
		{"bot", bot, []string{bot}},
		{"user", "token: " + user, []string{user}},
		{"app", app, []string{app}},
		{"rotating", rot, []string{rot}},
		{"webhook", "https://" + hook, []string{hook}},
		{"json", `{"url":"https://` + hook + `"}`, []string{hook}},
		// near misses
		{"short", "xoxb-123", nil},
		{"no digit", "xoxb-abcdefghijklmnop", nil},
		{"unknown kind", "xoxz-1234567890-abc", nil},
		{"other hooks host", "hooks.example.com/services/T0/B0/X", nil},
		{"webhook without path", "hooks.slack.com/services/", nil},
	})
}
