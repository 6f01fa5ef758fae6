package shellclass

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
)

var allFlags = []Flag{
	FlagPipeline, FlagList, FlagControl, FlagSubshell, FlagSubstitution, FlagExpansion,
	FlagDynamic, FlagSudo, FlagShell, FlagInterpreter, FlagPipeToShell, FlagWrite, FlagRead,
	FlagBackground, FlagFunctionDef, FlagNetwork, FlagDestructive,
}

// checkInvariants returns a description of the first property of
// Classify's result that does not hold, or "".
func checkInvariants(command string, res Result, err error) string {
	if err != nil {
		if errors.Is(err, errInternal) {
			return fmt.Sprintf("internal error: %v", err)
		}
		if !errors.Is(err, ErrParse) && !errors.Is(err, ErrEmpty) {
			return fmt.Sprintf("error %v is neither ErrParse nor ErrEmpty", err)
		}
		if !reflect.DeepEqual(res, Result{}) {
			return "non-empty result with an error"
		}
		return ""
	}
	if res.Command != command {
		return "Command is not the input"
	}
	for name, l := range map[string][]string{
		"programs": res.Programs, "writes": res.Writes, "reads": res.Reads,
		"env": res.Env, "functions": res.Functions,
	} {
		if !isSortedUnique(l) {
			return fmt.Sprintf("%s %q not sorted and unique", name, l)
		}
		if slices.Contains(l, "") {
			return fmt.Sprintf("empty string in %s", name)
		}
	}
	if !isSortedUnique(res.Flags) {
		return fmt.Sprintf("flags %q not sorted and unique", res.Flags)
	}
	for _, f := range res.Flags {
		if !slices.Contains(allFlags, f) {
			return fmt.Sprintf("unknown flag %q", f)
		}
	}
	if res.Has(FlagPipeToShell) && !res.Has(FlagShell) && !res.Has(FlagInterpreter) {
		return "pipe_to_shell with neither shell nor interpreter"
	}
	if (len(res.Writes) > 0) != res.Has(FlagWrite) || (len(res.Reads) > 0) != res.Has(FlagRead) {
		return "writes/reads disagree with their flags"
	}
	if (len(res.Functions) > 0) != res.Has(FlagFunctionDef) {
		return "functions disagree with function_def"
	}
	for i, c := range res.Commands {
		if len(c.Argv) == 0 {
			return fmt.Sprintf("command %d: empty argv", i)
		}
		if c.Program == "" {
			if !c.Dynamic || !res.Has(FlagDynamic) {
				return fmt.Sprintf("command %d: no program but not dynamic", i)
			}
			continue
		}
		if c.Argv[0] != c.Program || c.Name != baseName(c.Program) {
			return fmt.Sprintf("command %d: program %q name %q argv[0] %q", i, c.Program, c.Name, c.Argv[0])
		}
		if !slices.Contains(res.Programs, c.Program) || !slices.Contains(res.Programs, c.Name) {
			return fmt.Sprintf("command %d: %q not in programs", i, c.Program)
		}
		if c.Dynamic && !res.Has(FlagExpansion) {
			return fmt.Sprintf("command %d: dynamic without expansion", i)
		}
		if !isSortedUnique(c.Env) {
			return fmt.Sprintf("command %d: env %q not sorted and unique", i, c.Env)
		}
		if c.Sudo && !res.Has(FlagSudo) {
			return fmt.Sprintf("command %d: sudo without the flag", i)
		}
		if sudoPrograms[c.Name] && !res.Has(FlagSudo) {
			return fmt.Sprintf("command %d: %s without the sudo flag", i, c.Name)
		}
		if networkPrograms[c.Name] && !res.Has(FlagNetwork) {
			return fmt.Sprintf("command %d: %s without the network flag", i, c.Name)
		}
	}
	again, err := Classify(command)
	if err != nil || !reflect.DeepEqual(res, again) {
		return "not deterministic"
	}
	return ""
}

func isSortedUnique[T ~string](l []T) bool {
	for i := 1; i < len(l); i++ {
		if l[i-1] >= l[i] {
			return false
		}
	}
	return true
}
