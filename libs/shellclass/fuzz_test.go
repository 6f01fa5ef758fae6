package shellclass

import (
	"testing"
)

// FuzzClassify checks that Classify never panics (a recovered panic is an
// internal error), is deterministic, and returns well-formed results (see
// checkInvariants). Seeds: the corpus, plus testdata/fuzz/FuzzClassify.
func FuzzClassify(f *testing.F) {
	for _, e := range loadCorpus(f) {
		f.Add(e.text())
	}
	f.Fuzz(func(t *testing.T, command string) {
		res, err := Classify(command)
		if msg := checkInvariants(command, res, err); msg != "" {
			t.Fatalf("%q: %s", command, msg)
		}
	})
}

// TestCorpusInvariants applies the fuzz properties to every corpus entry.
func TestCorpusInvariants(t *testing.T) {
	for _, e := range loadCorpus(t) {
		res, err := Classify(e.text())
		if msg := checkInvariants(e.text(), res, err); msg != "" {
			t.Errorf("corpus %q: %s", e.Name, msg)
		}
	}
}
