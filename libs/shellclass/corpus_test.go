package shellclass

import (
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
	Name    string  `yaml:"name"`
	Note    string  `yaml:"note"`
	Command string  `yaml:"command"`
	Repeat  *repeat `yaml:"repeat"`
	Error   string  `yaml:"error"` // "parse" or "empty"

	Programs  *[]string   `yaml:"programs"`
	HasProgs  []string    `yaml:"has_programs"`
	LacksProg []string    `yaml:"lacks_programs"`
	Flags     *[]string   `yaml:"flags"`
	Has       []string    `yaml:"has"`
	Lacks     []string    `yaml:"lacks"`
	Writes    *[]string   `yaml:"writes"`
	Reads     *[]string   `yaml:"reads"`
	Env       *[]string   `yaml:"env"`
	Functions *[]string   `yaml:"functions"`
	Commands  []cmdExpect `yaml:"commands"`
}

// repeat builds a long command: Command + Head×Times + Middle + Tail×Times.
type repeat struct {
	Head   string `yaml:"head"`
	Times  int    `yaml:"times"`
	Middle string `yaml:"middle"`
	Tail   string `yaml:"tail"`
}

type cmdExpect struct {
	Program *string   `yaml:"program"`
	Name    *string   `yaml:"name"`
	Argv    *[]string `yaml:"argv"`
	Dynamic *bool     `yaml:"dynamic"`
	Sudo    *bool     `yaml:"sudo"`
	Env     *[]string `yaml:"env"`
	Via     *[]string `yaml:"via"`
}

func (e corpusEntry) text() string {
	if e.Repeat == nil {
		return e.Command
	}
	r := e.Repeat
	return e.Command + strings.Repeat(r.Head, r.Times) + r.Middle + strings.Repeat(r.Tail, r.Times)
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
	require.GreaterOrEqual(t, len(entries), 60, "the corpus must hold at least 60 command lines")
	seen := map[string]bool{}
	for _, e := range entries {
		require.NotEmpty(t, e.Name)
		require.False(t, seen[e.Name], "duplicate corpus name %q", e.Name)
		seen[e.Name] = true
		t.Run(e.Name, func(t *testing.T) {
			src := e.text()
			res, err := Classify(src)
			switch e.Error {
			case "parse":
				require.ErrorIs(t, err, ErrParse, "corpus %q", e.Name)
				return
			case "empty":
				require.ErrorIs(t, err, ErrEmpty, "corpus %q", e.Name)
				return
			case "":
			default:
				t.Fatalf("corpus %q: unknown error kind %q", e.Name, e.Error)
			}
			require.NoError(t, err, "corpus %q", e.Name)
			if diff := e.diff(res); diff != "" {
				t.Errorf("corpus %q:\n%s\ngot: %s", e.Name, diff, describe(res))
			}
		})
	}
}

// diff lists what in res does not match the expectation.
func (e corpusEntry) diff(res Result) string {
	var out []string
	list := func(field string, want *[]string, got []string) {
		if want == nil {
			return
		}
		w := slices.Clone(*want)
		slices.Sort(w)
		if !slices.Equal(w, got) && !(len(w) == 0 && len(got) == 0) {
			out = append(out, fmt.Sprintf("  %s: want %q, got %q", field, w, got))
		}
	}
	list("programs", e.Programs, res.Programs)
	list("flags", e.Flags, flagStrings(res.Flags))
	list("writes", e.Writes, res.Writes)
	list("reads", e.Reads, res.Reads)
	list("env", e.Env, res.Env)
	list("functions", e.Functions, res.Functions)
	for _, p := range e.HasProgs {
		if !slices.Contains(res.Programs, p) {
			out = append(out, fmt.Sprintf("  has_programs: missing %q", p))
		}
	}
	for _, p := range e.LacksProg {
		if slices.Contains(res.Programs, p) {
			out = append(out, fmt.Sprintf("  lacks_programs: unexpected %q", p))
		}
	}
	for _, f := range e.Has {
		if !res.Has(Flag(f)) {
			out = append(out, fmt.Sprintf("  has: missing flag %q", f))
		}
	}
	for _, f := range e.Lacks {
		if res.Has(Flag(f)) {
			out = append(out, fmt.Sprintf("  lacks: unexpected flag %q", f))
		}
	}
	if e.Commands != nil {
		if len(e.Commands) != len(res.Commands) {
			out = append(out, fmt.Sprintf("  commands: want %d, got %d", len(e.Commands), len(res.Commands)))
		} else {
			for i, want := range e.Commands {
				if d := want.diff(res.Commands[i]); d != "" {
					out = append(out, fmt.Sprintf("  command %d: %s", i, d))
				}
			}
		}
	}
	return strings.Join(out, "\n")
}

func (e cmdExpect) diff(c Command) string {
	var out []string
	str := func(field string, want *string, got string) {
		if want != nil && *want != got {
			out = append(out, fmt.Sprintf("%s want %q got %q", field, *want, got))
		}
	}
	boolean := func(field string, want *bool, got bool) {
		if want != nil && *want != got {
			out = append(out, fmt.Sprintf("%s want %v got %v", field, *want, got))
		}
	}
	list := func(field string, want *[]string, got []string) {
		if want != nil && !slices.Equal(*want, got) && !(len(*want) == 0 && len(got) == 0) {
			out = append(out, fmt.Sprintf("%s want %q got %q", field, *want, got))
		}
	}
	str("program", e.Program, c.Program)
	str("name", e.Name, c.Name)
	list("argv", e.Argv, c.Argv)
	boolean("dynamic", e.Dynamic, c.Dynamic)
	boolean("sudo", e.Sudo, c.Sudo)
	list("env", e.Env, c.Env)
	list("via", e.Via, c.Via)
	return strings.Join(out, "; ")
}

func flagStrings(fs []Flag) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return out
}

func describe(res Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "programs=%q flags=%q writes=%q reads=%q env=%q functions=%q",
		res.Programs, res.Flags, res.Writes, res.Reads, res.Env, res.Functions)
	for _, c := range res.Commands {
		fmt.Fprintf(&b, "\n  program=%q name=%q argv=%q dynamic=%v sudo=%v env=%q via=%q",
			c.Program, c.Name, c.Argv, c.Dynamic, c.Sudo, c.Env, c.Via)
	}
	return b.String()
}

// TestCorpusFlagsAreKnown guards the corpus against typos in flag names,
// which would make a `lacks` check vacuous.
func TestCorpusFlagsAreKnown(t *testing.T) {
	for _, e := range loadCorpus(t) {
		var fs []string
		if e.Flags != nil {
			fs = append(fs, *e.Flags...)
		}
		for _, f := range append(append(fs, e.Has...), e.Lacks...) {
			require.Contains(t, allFlags, Flag(f), "corpus %q: unknown flag", e.Name)
		}
	}
}
