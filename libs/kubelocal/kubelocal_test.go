package kubelocal_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"sluice.dev/sluice/libs/kubelocal"
)

func TestStart(t *testing.T) {
	if _, _, err := kubelocal.Binaries(); err != nil {
		if os.Getenv("SLUICE_E2E_REQUIRED") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	s, err := kubelocal.Start(context.Background(), kubelocal.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	defer s.Stop()
	ca, err := os.ReadFile(s.CAFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/api/v1/namespaces", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		require.NoError(t, err, "the serving certificate verifies with CAFile")
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusOK, get(s.AdminToken))
	assert.Equal(t, http.StatusForbidden, get(s.UserToken))
	assert.Equal(t, http.StatusUnauthorized, get("nope"))
}
