package sqlclass

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

var validKinds = map[Kind]bool{
	KindRead: true, KindSession: true, KindTransaction: true, KindUtility: true,
	KindWrite: true, KindDDL: true, KindPrivilege: true, KindAdmin: true,
}

// readFlags are the only flags a KindRead statement may carry: anything else
// means it does something a read does not. Plain EXPLAIN is the exception:
// it keeps the flags of the function calls it plans without running them.
var readFlags = flagsOf(FlagLock, FlagSideEffectFunc, FlagLiteralSensitive, FlagCursor, FlagPrepare)

// checkInvariants returns a description of the first property of Classify's
// result that does not hold, or "".
func checkInvariants(sql string, res *Result, err error) string {
	if err != nil {
		if !errors.Is(err, ErrParse) && !errors.Is(err, ErrEmpty) {
			return fmt.Sprintf("error %v is neither ErrParse nor ErrEmpty", err)
		}
		if res != nil {
			return "non-nil result with an error"
		}
		return ""
	}
	if res == nil || len(res.Statements) == 0 {
		return "no statements and no error"
	}
	if len(res.Fingerprint) != 32 || len(res.QueryFingerprint) != 16 {
		return fmt.Sprintf("fingerprints %q %q have the wrong length", res.Fingerprint, res.QueryFingerprint)
	}
	for i, s := range res.Statements {
		if !validKinds[s.Kind] {
			return fmt.Sprintf("statement %d: invalid kind %q", i, s.Kind)
		}
		if s.Command == "" {
			return fmt.Sprintf("statement %d: empty command", i)
		}
		if s.Command != strings.ToUpper(s.Command) {
			return fmt.Sprintf("statement %d: command %q not upper-case", i, s.Command)
		}
		for name, l := range map[string][]string{"reads": s.Reads, "writes": s.Writes, "functions": s.Functions} {
			if !sortedUnique(l) {
				return fmt.Sprintf("statement %d: %s %q not sorted and unique", i, name, l)
			}
			for _, n := range l {
				if n == "" {
					return fmt.Sprintf("statement %d: empty name in %s", i, name)
				}
			}
		}
		if !sortedUnique(s.Flags) {
			return fmt.Sprintf("statement %d: flags %q not sorted and unique", i, s.Flags)
		}
		var set flagSet
		for _, f := range s.Flags {
			if _, ok := flagBits[f]; !ok {
				return fmt.Sprintf("statement %d: unknown flag %q", i, f)
			}
			set |= flagBits[f]
		}
		plainExplain := s.Command == "EXPLAIN" && !s.Has(FlagExplainAnalyze)
		if s.Kind == KindRead && !plainExplain && set&^readFlags != 0 {
			return fmt.Sprintf("statement %d: kind read with flags %q", i, s.Flags)
		}
		if s.Has(FlagCTEWrite) && s.Kind.Rank() < KindWrite.Rank() {
			return fmt.Sprintf("statement %d: cte_write but kind %s", i, s.Kind)
		}
		if s.Text == "" || !strings.Contains(sql, s.Text) {
			return fmt.Sprintf("statement %d: text %q is not part of the input", i, s.Text)
		}
	}
	again, err := Classify(sql)
	if err != nil || !reflect.DeepEqual(res, again) {
		return fmt.Sprintf("not deterministic: %+v then %+v (%v)", res, again, err)
	}
	return ""
}

func sortedUnique[T ~string](l []T) bool {
	return slices.IsSorted(l) && len(slices.Compact(slices.Clone(l))) == len(l)
}
