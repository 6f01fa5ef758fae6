package cli

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"sluice.dev/sluice/services/api"
)

// A listed command stays on one line, and a second line cannot pass for
// the rest of a comment on the first; fields draw nothing on a terminal.
func TestApprovalsListShowsLineBreaks(t *testing.T) {
	a := api.ApprovalJSON{Type: "command", Command: "SELECT 1 -- read only\nDELETE   FROM users"}
	assert.Equal(t, "SELECT 1 -- read only ⏎ DELETE FROM users", approvalWhat(a, 60))
	long := api.ApprovalJSON{Type: "command", Command: strings.Repeat("x", 100)}
	assert.Equal(t, strings.Repeat("x", 37)+" ... (100 bytes in all)", approvalWhat(long, 60))
	assert.Equal(t, "x⟨U+000A⟩role:        reader⟨U+001B⟩[8m", oneLine("x\nrole:        reader\x1b[8m"))
}
