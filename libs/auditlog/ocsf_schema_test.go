package auditlog_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// ocsfSchema is the extract in testdata/ocsf-1.1.0.json of the OCSF 1.1.0
// schema: the classes Sluice emits and the objects they use.
type ocsfSchema struct {
	Version string                  `json:"version"`
	Types   map[string]string       `json:"types"`
	Classes map[string]*schemaClass `json:"classes"`
	Objects map[string]*schemaType  `json:"objects"`
}

type schemaClass struct {
	UID          int    `json:"uid"`
	Caption      string `json:"caption"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name"`
	schemaType
}

type schemaType struct {
	Attributes  map[string]*schemaAttr `json:"attributes"`
	Constraints struct {
		AtLeastOne []string `json:"at_least_one"`
	} `json:"constraints"`
}

type schemaAttr struct {
	Type        string            `json:"type"`
	Requirement string            `json:"requirement"`
	IsArray     bool              `json:"is_array"`
	ObjectType  string            `json:"object_type"`
	Enum        map[string]string `json:"enum"`
	Sibling     string            `json:"sibling"`
}

var (
	schemaOnce sync.Once
	schema     ocsfSchema
	schemaErr  error
)

func loadSchema(t *testing.T) *ocsfSchema {
	t.Helper()
	schemaOnce.Do(func() {
		b, err := os.ReadFile("testdata/ocsf-1.1.0.json")
		if err != nil {
			schemaErr = err
			return
		}
		schemaErr = json.Unmarshal(b, &schema)
	})
	require.NoError(t, schemaErr)
	return &schema
}

// validateOCSF checks an event, as a SIEM receives it (JSON), against the
// schema extract: the class exists; class, category, activity and type ids
// agree (type_uid = class_uid*100 + activity_id) and match their captions;
// every required attribute is present, no attribute is unknown to the
// class or object, every value has its attribute's type, every enum value
// is defined, and the at_least_one constraints hold.
func validateOCSF(t *testing.T, event any) []string {
	t.Helper()
	s := loadSchema(t)
	raw, err := json.Marshal(event)
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var ev map[string]any
	require.NoError(t, dec.Decode(&ev))

	v := &validator{s: s}
	classUID, ok := integer(ev["class_uid"])
	if !ok {
		return []string{"class_uid is missing or not an integer"}
	}
	var c *schemaClass
	for _, sc := range s.Classes {
		if int64(sc.UID) == classUID {
			c = sc
		}
	}
	if c == nil {
		return []string{fmt.Sprintf("class_uid %d is not a class of the extract", classUID)}
	}
	activity, _ := integer(ev["activity_id"])
	category, _ := integer(ev["category_uid"])
	typeUID, _ := integer(ev["type_uid"])
	if category != int64(c.CategoryUID) {
		v.errf("category_uid %d is not %s's category %d", category, c.Caption, c.CategoryUID)
	}
	if typeUID != classUID*100+activity {
		v.errf("type_uid %d is not class_uid*100+activity_id = %d", typeUID, classUID*100+activity)
	}
	v.object(c.Caption, &c.schemaType, ev)
	sort.Strings(v.errs)
	return v.errs
}

type validator struct {
	s    *ocsfSchema
	errs []string
}

func (v *validator) errf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Sprintf(format, args...))
}

func (v *validator) object(path string, t *schemaType, m map[string]any) {
	for name, a := range t.Attributes {
		if a.Requirement == "required" && m[name] == nil {
			v.errf("%s.%s is required", path, name)
		}
	}
	for name, val := range m {
		a, ok := t.Attributes[name]
		if !ok {
			v.errf("%s.%s is not an attribute of %s in OCSF %s", path, name, path, v.s.Version)
			continue
		}
		if a.IsArray {
			list, ok := val.([]any)
			if !ok {
				v.errf("%s.%s must be an array", path, name)
				continue
			}
			for i, x := range list {
				v.value(fmt.Sprintf("%s.%s[%d]", path, name, i), a, x)
			}
			continue
		}
		v.value(path+"."+name, a, val)
		if len(a.Enum) > 0 && a.Sibling != "" {
			id, _ := val.(json.Number)
			if caption, ok := a.Enum[id.String()]; ok && id.String() != "99" {
				if sib, present := m[a.Sibling]; present && sib != caption {
					v.errf("%s.%s is %q, not the caption %q of %s %s", path, a.Sibling, sib, caption, name, id)
				}
			}
		}
	}
	if cs := t.Constraints.AtLeastOne; len(cs) > 0 {
		found := false
		for _, name := range cs {
			found = found || m[name] != nil
		}
		if !found {
			v.errf("%s needs at least one of %s", path, strings.Join(cs, ", "))
		}
	}
}

func (v *validator) value(path string, a *schemaAttr, val any) {
	base, ok := v.s.Types[a.Type]
	if !ok {
		v.errf("%s: type %s is not in the extract", path, a.Type)
		return
	}
	switch base {
	case "string":
		s, ok := val.(string)
		if !ok {
			v.errf("%s must be a string (%s), not %T", path, a.Type, val)
			return
		}
		switch a.Type {
		case "ip_t":
			if net.ParseIP(s) == nil {
				v.errf("%s %q is not an IP address", path, s)
			}
		case "email_t":
			if !strings.Contains(s, "@") {
				v.errf("%s %q is not an email address", path, s)
			}
		}
	case "integer":
		n, ok := integer(val)
		if !ok {
			v.errf("%s must be an integer (%s), not %v", path, a.Type, val)
			return
		}
		if a.Type == "port_t" && (n < 0 || n > 65535) {
			v.errf("%s %d is not a port", path, n)
		}
		if a.Type == "timestamp_t" && n < 1e12 {
			v.errf("%s %d is not milliseconds since the epoch", path, n)
		}
		if len(a.Enum) > 0 {
			if _, ok := a.Enum[strconv.FormatInt(n, 10)]; !ok {
				v.errf("%s %d is not a value of its enum", path, n)
			}
		}
	case "number":
		if _, ok := val.(json.Number); !ok {
			v.errf("%s must be a number", path)
		}
	case "boolean":
		if _, ok := val.(bool); !ok {
			v.errf("%s must be a boolean", path)
		}
	case "any":
	case "object":
		m, ok := val.(map[string]any)
		if !ok {
			v.errf("%s must be an object", path)
			return
		}
		if a.ObjectType == "object" {
			return // unmapped: anything
		}
		o, ok := v.s.Objects[a.ObjectType]
		if !ok {
			v.errf("%s: object %s is not in the extract", path, a.ObjectType)
			return
		}
		v.object(path, o, m)
	}
}

func integer(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	return i, err == nil
}

// requireValidOCSF fails the test with every schema violation.
func requireValidOCSF(t *testing.T, event any) {
	t.Helper()
	if errs := validateOCSF(t, event); len(errs) > 0 {
		b, _ := json.MarshalIndent(event, "", "  ")
		t.Fatalf("not valid OCSF %s:\n  %s\n%s", loadSchema(t).Version, strings.Join(errs, "\n  "), b)
	}
}

// The validator itself must catch what it is for.
func TestValidatorRejects(t *testing.T) {
	good := func() map[string]any {
		return map[string]any{
			"class_uid": 6003, "category_uid": 6, "activity_id": 3, "type_uid": 600303, "activity_name": "Update",
			"severity_id": 1, "time": int64(1767323045000),
			"metadata":     map[string]any{"version": "1.1.0", "product": map[string]any{"name": "Sluice", "vendor_name": "Sluice"}},
			"actor":        map[string]any{"user": map[string]any{"name": "bob"}},
			"api":          map[string]any{"operation": "approvals.request.decide"},
			"src_endpoint": map[string]any{"svc_name": "api"},
		}
	}
	requireValidOCSF(t, good())
	for name, tc := range map[string]struct {
		change func(map[string]any)
		want   string
	}{
		"type_uid":      {func(e map[string]any) { e["type_uid"] = 600399 }, "type_uid 600399 is not class_uid*100+activity_id"},
		"category":      {func(e map[string]any) { e["category_uid"] = 3 }, "category_uid 3"},
		"activity enum": {func(e map[string]any) { e["activity_id"], e["type_uid"] = 7, 600307 }, "activity_id 7 is not a value"},
		"caption":       {func(e map[string]any) { e["activity_name"] = "Other" }, `activity_name is "Other", not the caption "Update"`},
		"required":      {func(e map[string]any) { delete(e, "actor") }, "API Activity.actor is required"},
		"nested":        {func(e map[string]any) { e["api"] = map[string]any{} }, "API Activity.api.operation is required"},
		"unknown":       {func(e map[string]any) { e["disposition"] = "Blocked" }, "disposition is not an attribute"},
		"type":          {func(e map[string]any) { e["severity_id"] = "1" }, "severity_id must be an integer"},
		"string type":   {func(e map[string]any) { e["metadata"].(map[string]any)["version"] = 1 }, "metadata.version must be a string"},
		"ip":            {func(e map[string]any) { e["src_endpoint"] = map[string]any{"ip": "not-an-ip"} }, `"not-an-ip" is not an IP address`},
		"at_least_one":  {func(e map[string]any) { e["src_endpoint"] = map[string]any{"port": 5432} }, "src_endpoint needs at least one of"},
		"array":         {func(e map[string]any) { e["resources"] = map[string]any{"uid": "x"} }, "resources must be an array"},
		"class":         {func(e map[string]any) { e["class_uid"] = 4007 }, "class_uid 4007 is not a class"},
		"policy version": {func(e map[string]any) {
			e["actor"].(map[string]any)["authorizations"] = []any{map[string]any{"policy": map[string]any{"name": "r", "version": 3}}}
		}, "policy.version must be a string"},
	} {
		t.Run(name, func(t *testing.T) {
			e := good()
			tc.change(e)
			errs := validateOCSF(t, e)
			require.NotEmpty(t, errs)
			require.Contains(t, strings.Join(errs, "\n"), tc.want)
		})
	}
}
