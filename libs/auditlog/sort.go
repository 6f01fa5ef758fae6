package auditlog

import (
	"sort"

	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

func sortNewestFirst(s []*sessionv1.Summary) {
	sort.Slice(s, func(i, j int) bool {
		return s[i].GetStartedAt().AsTime().After(s[j].GetStartedAt().AsTime())
	})
}
