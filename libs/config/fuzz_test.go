package config_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"sluice.dev/sluice/libs/config"
)

// FuzzParse checks that any input is parsed or refused without a panic,
// and that every error points inside the input.
func FuzzParse(f *testing.F) {
	b, err := os.ReadFile("testdata/sluice.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("policies:\n  - name: a\n   action: deny\n"))
	f.Add([]byte("policies:\n  - name: a\n    when: >-\n      x &&\n      y\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("targets:\n  - name: \"unclosed\n"))
	f.Add([]byte("\r0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := config.Parse(data)
		// YAML breaks lines at \n, \r\n and a lone \r.
		lines := strings.Count(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n") + strings.Count(string(data), "\r") - strings.Count(string(data), "\r\n") + 1
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				if e.Line < 0 || e.Line > lines || e.Column < 0 {
					t.Fatalf("error outside the input (%d lines): %v", lines, e)
				}
			}
			return
		}
		if err != nil {
			t.Fatalf("not an Errors: %T %v", err, err)
		}
		for i, r := range file.Policies {
			if l, c := file.WhenPosition(i, 1, 1); l != r.Line || c != r.Column {
				t.Fatalf("rule %d: when starts at %d:%d, WhenPosition says %d:%d", i, r.Line, r.Column, l, c)
			}
			file.WhenPosition(i, 100, 100)
		}
	})
}
