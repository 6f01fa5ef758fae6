package sqlclass_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"sluice.dev/sluice/libs/sqlclass"
)

func TestShownWritesEachParameterOnItsOwnLine(t *testing.T) {
	assert.Equal(t, "SELECT 1", sqlclass.Shown("SELECT 1", nil))
	assert.Equal(t, "DELETE FROM t WHERE id = $1 AND name = $2\n-- bound parameters:\n-- $1 = 42\n-- $2 = NULL",
		sqlclass.Shown("DELETE FROM t WHERE id = $1 AND name = $2", []string{"42", "NULL"}))
}

func TestLiteralCannotEndItsLine(t *testing.T) {
	for in, want := range map[string]string{
		"":                         "''",
		"O'Brien":                  "'O''Brien'",
		"café ж":                   "'café ж'",
		"x'\n-- $2 = 'harmless":    `E'x\'\n-- $2 = \'harmless'`,
		`C:\dir`:                   `E'C:\\dir'`,
		"a\tb\rc\x1b[2Kd\x00e\x7f": `E'a\tb\rc\x1b[2Kd\x00e\x7f'`,
		"\b\f":                     `E'\b\f'`,
	} {
		assert.Equal(t, want, sqlclass.Literal(in), "%q", in)
	}
}
