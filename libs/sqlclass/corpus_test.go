package sqlclass

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// corpusEntry is one case of testdata/corpus.yaml. Nil fields are not
// checked.
type corpusEntry struct {
	Name       string   `yaml:"name"`
	Note       string   `yaml:"note"`
	SQL        string   `yaml:"sql"`
	Error      string   `yaml:"error"` // "parse" or "empty"
	Kinds      []string `yaml:"kinds"`
	stmtExpect `yaml:",inline"`
	Stmts      []stmtExpect `yaml:"stmts"`
}

type stmtExpect struct {
	Kind      *string   `yaml:"kind"`
	Command   *string   `yaml:"command"`
	Reads     *[]string `yaml:"reads"`
	Writes    *[]string `yaml:"writes"`
	Functions *[]string `yaml:"functions"`
	Flags     *[]string `yaml:"flags"`
	Has       []string  `yaml:"has"`
	Lacks     []string  `yaml:"lacks"`
	Setting   *string   `yaml:"setting"`
	Prepared  *string   `yaml:"prepared"`
	Cursor    *string   `yaml:"cursor"`
	Text      *string   `yaml:"text"`
}

func (e stmtExpect) empty() bool {
	return e.Kind == nil && e.Command == nil && e.Reads == nil && e.Writes == nil &&
		e.Functions == nil && e.Flags == nil && e.Has == nil && e.Lacks == nil &&
		e.Setting == nil && e.Prepared == nil && e.Cursor == nil && e.Text == nil
}

func loadCorpus(t testing.TB) []corpusEntry {
	t.Helper()
	b, err := os.ReadFile("testdata/corpus.yaml")
	require.NoError(t, err)
	var entries []corpusEntry
	require.NoError(t, yaml.Unmarshal(b, &entries))
	return entries
}

func TestCorpus(t *testing.T) {
	entries := loadCorpus(t)
	require.GreaterOrEqual(t, len(entries), 120, "the corpus must hold at least 120 statements")
	seen := map[string]bool{}
	for _, e := range entries {
		require.NotEmpty(t, e.Name)
		require.False(t, seen[e.Name], "duplicate corpus name %q", e.Name)
		seen[e.Name] = true
		t.Run(e.Name, func(t *testing.T) {
			res, err := Classify(e.SQL)
			switch e.Error {
			case "parse":
				require.ErrorIs(t, err, ErrParse, "corpus %q: sql %q", e.Name, e.SQL)
				return
			case "empty":
				require.ErrorIs(t, err, ErrEmpty, "corpus %q: sql %q", e.Name, e.SQL)
				return
			case "":
			default:
				t.Fatalf("corpus %q: unknown error kind %q", e.Name, e.Error)
			}
			require.NoError(t, err, "corpus %q: sql %q", e.Name, e.SQL)
			if e.Kinds != nil {
				got := make([]string, 0, len(res.Kinds()))
				for _, k := range res.Kinds() {
					got = append(got, string(k))
				}
				require.Equal(t, e.Kinds, got, "corpus %q: Result.Kinds()", e.Name)
			}
			expects := e.Stmts
			if !e.stmtExpect.empty() {
				require.Nil(t, e.Stmts, "corpus %q: use either top-level fields or stmts", e.Name)
				require.Len(t, res.Statements, 1, "corpus %q: expected exactly one statement", e.Name)
				expects = []stmtExpect{e.stmtExpect}
			}
			if expects != nil {
				require.Len(t, res.Statements, len(expects), "corpus %q: statement count", e.Name)
			}
			for i, want := range expects {
				if diff := want.diff(res.Statements[i]); diff != "" {
					t.Errorf("corpus %q statement %d (%q):\n%s\ngot: %s", e.Name, i, res.Statements[i].Text, diff, describe(res.Statements[i]))
				}
			}
		})
	}
}

// diff lists the fields of s that do not match the expectation.
func (e stmtExpect) diff(s Statement) string {
	var out []string
	check := func(field string, want *string, got string) {
		if want != nil && *want != got {
			out = append(out, fmt.Sprintf("  %s: want %q, got %q", field, *want, got))
		}
	}
	checkList := func(field string, want *[]string, got []string) {
		if want == nil {
			return
		}
		w := slices.Clone(*want)
		slices.Sort(w)
		if !slices.Equal(w, got) && !(len(w) == 0 && len(got) == 0) {
			out = append(out, fmt.Sprintf("  %s: want %q, got %q", field, w, got))
		}
	}
	check("kind", e.Kind, string(s.Kind))
	check("command", e.Command, s.Command)
	checkList("reads", e.Reads, s.Reads)
	checkList("writes", e.Writes, s.Writes)
	checkList("functions", e.Functions, s.Functions)
	checkList("flags", e.Flags, flagStrings(s.Flags))
	for _, f := range e.Has {
		if !s.Has(Flag(f)) {
			out = append(out, fmt.Sprintf("  has: missing flag %q", f))
		}
	}
	for _, f := range e.Lacks {
		if s.Has(Flag(f)) {
			out = append(out, fmt.Sprintf("  lacks: unexpected flag %q", f))
		}
	}
	check("setting", e.Setting, s.Setting)
	check("prepared", e.Prepared, s.PreparedName)
	check("cursor", e.Cursor, s.Cursor)
	check("text", e.Text, s.Text)
	return strings.Join(out, "\n")
}

func flagStrings(fs []Flag) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return out
}

func describe(s Statement) string {
	return fmt.Sprintf("kind=%s command=%q reads=%q writes=%q functions=%q flags=%q setting=%q prepared=%q cursor=%q",
		s.Kind, s.Command, s.Reads, s.Writes, s.Functions, s.Flags, s.Setting, s.PreparedName, s.Cursor)
}

// TestCorpusFlagsAreKnown guards the corpus against typos in flag and kind
// names, which would make a `lacks` check vacuous.
func TestCorpusFlagsAreKnown(t *testing.T) {
	kinds := []Kind{KindRead, KindSession, KindTransaction, KindUtility, KindWrite, KindDDL, KindPrivilege, KindAdmin}
	check := func(name string, e stmtExpect) {
		var fs []string
		if e.Flags != nil {
			fs = append(fs, *e.Flags...)
		}
		fs = append(append(fs, e.Has...), e.Lacks...)
		for _, f := range fs {
			require.Contains(t, allFlags, Flag(f), "corpus %q: unknown flag", name)
		}
		if e.Kind != nil {
			require.Contains(t, kinds, Kind(*e.Kind), "corpus %q: unknown kind", name)
		}
	}
	for _, e := range loadCorpus(t) {
		check(e.Name, e.stmtExpect)
		for _, s := range e.Stmts {
			check(e.Name, s)
		}
		for _, k := range e.Kinds {
			require.Contains(t, kinds, Kind(k), "corpus %q: unknown kind", e.Name)
		}
	}
}

func TestErrorsWrap(t *testing.T) {
	_, err := Classify("SELEKT 1")
	require.ErrorIs(t, err, ErrParse)
	require.Contains(t, err.Error(), "syntax error")
	_, err = Classify("SELECT 1\x00; DROP TABLE customers")
	require.ErrorIs(t, err, ErrParse, "a NUL byte must not cut the input short")
	_, err = Classify("SELECT '\xff'")
	require.ErrorIs(t, err, ErrParse)
	_, err = Classify("  ;  ")
	require.True(t, errors.Is(err, ErrEmpty))
}

// ClassifyParts gives every statement of the corpus the class Classify
// gives it, whatever parts it leaves out.
func TestClassifyPartsMatchesClassify(t *testing.T) {
	for _, e := range loadCorpus(t) {
		res, err := Classify(e.SQL)
		for _, parts := range []Parts{0, Lineage, Fingerprints} {
			got, perr := ClassifyParts(e.SQL, parts)
			if err != nil {
				require.Error(t, perr, "corpus %q", e.Name)
				require.Equal(t, errors.Is(err, ErrEmpty), errors.Is(perr, ErrEmpty), "corpus %q", e.Name)
				continue
			}
			require.NoError(t, perr, "corpus %q", e.Name)
			want := *res
			want.Statements = slices.Clone(res.Statements)
			if parts == 0 {
				for i := range want.Statements {
					st := &want.Statements[i]
					st.Targets, st.Sources, st.Copies, st.Inputs = nil, nil, nil, nil
				}
			}
			if parts&Fingerprints == 0 {
				want.Fingerprint, want.QueryFingerprint = "", ""
			}
			require.Equal(t, &want, got, "corpus %q, parts %d", e.Name, parts)
		}
	}
}
