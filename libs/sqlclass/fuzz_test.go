package sqlclass

import (
	"testing"
)

// FuzzClassify checks that Classify never panics, is deterministic, and
// returns well-formed results (see checkInvariants). Seeds: the corpus, plus
// testdata/fuzz/FuzzClassify.
func FuzzClassify(f *testing.F) {
	for _, e := range loadCorpus(f) {
		f.Add(e.SQL)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		res, err := Classify(sql)
		if msg := checkInvariants(sql, res, err); msg != "" {
			t.Fatalf("%q: %s", sql, msg)
		}
	})
}

// TestCorpusInvariants applies the fuzz properties to every corpus entry.
func TestCorpusInvariants(t *testing.T) {
	for _, e := range loadCorpus(t) {
		res, err := Classify(e.SQL)
		if msg := checkInvariants(e.SQL, res, err); msg != "" {
			t.Errorf("corpus %q: %s", e.Name, msg)
		}
	}
}
