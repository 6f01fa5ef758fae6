package recorder

import (
	"context"

	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// The metrics, for the tests.
var (
	EventsMetric        = recorderEvents
	ChainsMetric        = recorderChains
	IndexDeferredMetric = recorderIndexDeferred
	SessionsLostMetric  = recorderSessionsLost
	AfterLostMetric     = recorderAfterLost
)

// WriteSummaryForTest folds evs into the session's summary as the recorder
// does once their record is stored.
func (s *Service) WriteSummaryForTest(ctx context.Context, key string, evs []*sessionv1.Event) error {
	return s.writeSummary(ctx, key, evs)
}
