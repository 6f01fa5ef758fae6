package gateway

import (
	"testing"

	"github.com/stretchr/testify/assert"

	controlv1 "sluice.dev/sluice/proto/sluice/control/v1"
	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// Two sets of mask rules share a key only if they are the same in every
// field: maskers and plans are shared under it.
func TestMaskRulesKeyTellsEveryFieldApart(t *testing.T) {
	rule := func(mut func(r *controlv1.MaskRule)) *policyv1.Decision {
		r := &controlv1.MaskRule{Columns: []string{"customers.card"}, Detectors: []string{"card"}, Action: "keep", Keep: 4, Derived: "mask"}
		if mut != nil {
			mut(r)
		}
		return &policyv1.Decision{Masks: []*controlv1.MaskRule{r}}
	}
	base := MaskRulesKey(rule(nil))
	assert.Equal(t, base, MaskRulesKey(rule(nil)), "the same rules, the same key")
	for name, mut := range map[string]func(r *controlv1.MaskRule){
		"keep":      func(r *controlv1.MaskRule) { r.Keep = 1 },
		"action":    func(r *controlv1.MaskRule) { r.Action = "redact" },
		"derived":   func(r *controlv1.MaskRule) { r.Derived = "refuse" },
		"columns":   func(r *controlv1.MaskRule) { r.Columns = []string{"customers.ssn"} },
		"detectors": func(r *controlv1.MaskRule) { r.Detectors = nil },
		// A list joined with a separator the names may hold.
		"a comma in a name": func(r *controlv1.MaskRule) { r.Columns = []string{"customers.card,x"} },
	} {
		assert.NotEqual(t, base, MaskRulesKey(rule(mut)), name)
	}
	two := &policyv1.Decision{Masks: []*controlv1.MaskRule{{Columns: []string{"a", "b"}}}}
	split := &policyv1.Decision{Masks: []*controlv1.MaskRule{{Columns: []string{"a"}}, {Columns: []string{"b"}}}}
	assert.NotEqual(t, MaskRulesKey(two), MaskRulesKey(split))
}
