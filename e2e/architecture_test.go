package e2e

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "sluice.dev/sluice/"

type pkgInfo struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkgInfo {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "sluice.dev/sluice/...")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	dec := json.NewDecoder(out)
	var pkgs []pkgInfo
	for {
		var p pkgInfo
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else {
			require.NoError(t, err)
		}
		pkgs = append(pkgs, p)
	}
	require.NoError(t, cmd.Wait())
	return pkgs
}

// service returns the service a package belongs to ("" if none).
func service(path string) string {
	rest, ok := strings.CutPrefix(path, module+"services/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// TestArchitecture enforces the boundaries ARCHITECTURE.md states.
func TestArchitecture(t *testing.T) {
	for _, p := range listPackages(t) {
		own := service(p.ImportPath)
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			switch {
			case strings.HasPrefix(p.ImportPath, module+"proto/") && !strings.HasPrefix(imp, module+"proto/"):
				t.Errorf("%s: proto imports only proto, not %s", p.ImportPath, imp)
			case strings.HasPrefix(p.ImportPath, module+"libs/") && strings.HasPrefix(imp, module+"services/"):
				t.Errorf("%s: libs never import services (%s)", p.ImportPath, imp)
			case own != "" && own != "sluice" && service(imp) != "" && service(imp) != own:
				t.Errorf("%s: services never import each other (%s); share proto/ and libs/ instead", p.ImportPath, imp)
			}
		}
	}
}

// TestNoDataPlaneInControlServices checks absences: the policy, identity and
// control services never speak PostgreSQL.
func TestNoDataPlaneInControlServices(t *testing.T) {
	for _, p := range listPackages(t) {
		switch service(p.ImportPath) {
		case "policy", "identity", "control", "recorder", "approvals":
		default:
			continue
		}
		for _, d := range p.Deps {
			if strings.HasPrefix(d, "github.com/jackc/pgx") {
				t.Errorf("%s depends on %s: control-plane services must not speak PostgreSQL", p.ImportPath, d)
			}
		}
	}
}
