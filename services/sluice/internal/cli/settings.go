package cli

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// One configuration surface: every setting of `sluice serve` is a flag, an
// environment variable SLUICE_<NAME> (the flag's name in upper snake case)
// and a key of the settings file (--config-file, YAML, keys are the flags'
// names). The command line wins, then the environment, then the file, then
// the default.

// settingsFileFlag names the settings file flag.
const settingsFileFlag = "config-file"

// settingEnv is the environment variable of a flag.
func settingEnv(flag string) string {
	return "SLUICE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applySettings gives every flag not set on the command line its value
// from the environment or the settings file.
func applySettings(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) error {
	file := ""
	if f := fs.Lookup(settingsFileFlag); f != nil {
		file = f.Value.String()
		if !f.Changed {
			if v, ok := lookupEnv(settingEnv(settingsFileFlag)); ok {
				file = v
			}
		}
	}
	fromFile := map[string]any{}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("settings file: %w", err)
		}
		if err := yaml.Unmarshal(b, &fromFile); err != nil {
			return fmt.Errorf("settings file %s: %w", file, err)
		}
		var unknown []string
		for k := range fromFile {
			if f := fs.Lookup(k); f == nil || k == settingsFileFlag || k == "help" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("settings file %s: unknown setting(s) %s (its keys are the flags' names, without dashes in front: see --help)",
				file, strings.Join(unknown, ", "))
		}
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == settingsFileFlag || f.Name == "help" {
			return
		}
		env := settingEnv(f.Name)
		// An empty variable is unset, as a shell's VAR= usually means.
		if v, ok := lookupEnv(env); ok && strings.TrimSpace(v) != "" {
			values := []string{v}
			if isList(f) {
				values = strings.Split(v, ",")
			}
			for _, v := range values {
				if strings.TrimSpace(v) == "" {
					continue
				}
				if serr := f.Value.Set(strings.TrimSpace(v)); serr != nil {
					err = fmt.Errorf("%s=%q: %v", env, v, serr)
					return
				}
			}
			return
		}
		v, ok := fromFile[f.Name]
		if !ok || v == nil {
			return
		}
		values := []any{v}
		if list, isSeq := v.([]any); isSeq {
			if !isList(f) {
				err = fmt.Errorf("settings file %s: %s takes one value, not a list", file, f.Name)
				return
			}
			values = list
		}
		for _, x := range values {
			if _, nested := x.(map[string]any); nested {
				err = fmt.Errorf("settings file %s: %s takes a value, not a mapping", file, f.Name)
				return
			}
			if serr := f.Value.Set(fmt.Sprint(x)); serr != nil {
				err = fmt.Errorf("settings file %s: %s: %q: %v", file, f.Name, fmt.Sprint(x), serr)
				return
			}
		}
	})
	return err
}

func isList(f *pflag.Flag) bool {
	t := f.Value.Type()
	return strings.HasSuffix(t, "Array") || strings.HasSuffix(t, "Slice")
}

// documentSettings adds each flag's environment variable to its help, and
// the rule to the command's.
func documentSettings(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" || f.Name == settingsFileFlag {
			return
		}
		f.Usage += " [$" + settingEnv(f.Name) + "]"
	})
	cmd.Long += `

Every flag is also an environment variable, SLUICE_ and the flag's name in upper
snake case (--hold-timeout is SLUICE_HOLD_TIMEOUT; a list takes commas; an empty
variable counts as unset), and a key
of the YAML file --config-file names (hold-timeout: 2m; a list is a YAML list). The
command line wins, then the environment, then the file.`
}

// flagServices names the services a serve flag is for, from its help's
// prefix ("pgworker: ...", "workers, approvals: ..."); nil means every
// service.
func flagServices(f *pflag.Flag, services []string) []string {
	head, _, ok := strings.Cut(f.Usage, ": ")
	if !ok {
		return nil
	}
	var out []string
	for _, w := range strings.Split(head, ", ") {
		switch {
		case w == "workers":
			out = append(out, "pgworker", "sshworker", "k8sworker", "mcpworker")
		case slices.Contains(services, w):
			out = append(out, w)
		default:
			return nil
		}
	}
	return out
}

// serviceHelp shows, for `sluice serve SERVICE --help`, only the flags
// that service reads.
func serviceHelp(cmd *cobra.Command, services []string) {
	base := cmd.HelpFunc()
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		svc := ""
		for _, a := range args {
			if slices.Contains(services, a) {
				svc = a
			}
		}
		if svc == "" {
			base(c, args)
			return
		}
		var hidden []*pflag.Flag
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if on := flagServices(f, services); on != nil && !slices.Contains(on, svc) && !f.Hidden {
				f.Hidden = true
				hidden = append(hidden, f)
			}
		})
		use := c.Use
		c.Use = "serve " + svc
		base(c, args)
		c.Use = use
		for _, f := range hidden {
			f.Hidden = false
		}
	})
}
