package telemetry

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var testCounter = Factory.NewCounterVec(prometheus.CounterOpts{Name: "sluice_test_things_total", Help: "Things."}, []string{"kind"})

// Names knows a metric before it is counted; /metrics shows it once it is.
func TestNamesAndMetrics(t *testing.T) {
	assert.Contains(t, Names(), "sluice_test_things_total")
	testCounter.WithLabelValues("a").Inc()
	srv := httptest.NewServer(Handler(NewHealth()))
	defer srv.Close()
	body := get(t, srv.URL+"/metrics", http.StatusOK)
	assert.Contains(t, body, `sluice_test_things_total{kind="a"} 1`)
	assert.Contains(t, body, "sluice_build_info")
	assert.Contains(t, body, "go_goroutines")
}

// /readyz is ready only once every expected service said so and its
// checks pass; /healthz answers all along.
func TestReadiness(t *testing.T) {
	h := NewHealth()
	srv := httptest.NewServer(Handler(h))
	defer srv.Close()
	get(t, srv.URL+"/readyz", http.StatusServiceUnavailable) // nothing runs yet
	h.Expect("policy")
	h.Expect("recorder")
	get(t, srv.URL+"/healthz", http.StatusOK)
	h.Ready("policy")
	assert.Contains(t, get(t, srv.URL+"/readyz", http.StatusServiceUnavailable), `"recorder":"starting"`)
	h.Ready("recorder")
	get(t, srv.URL+"/readyz", http.StatusOK)

	var down error = assert.AnError
	h.Check("recorder", "nats", func() error { return down })
	assert.Contains(t, get(t, srv.URL+"/readyz", http.StatusServiceUnavailable), assert.AnError.Error())
	down = nil
	get(t, srv.URL+"/readyz", http.StatusOK)

	h.Restarting("policy")
	get(t, srv.URL+"/readyz", http.StatusServiceUnavailable)
	assert.True(t, h.Served("policy"))
	assert.False(t, h.Served("exporter"))
}

func get(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, want, resp.StatusCode, string(b))
	return string(b)
}
