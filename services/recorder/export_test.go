package recorder

// The metrics, for the tests.
var (
	EventsMetric        = recorderEvents
	ChainsMetric        = recorderChains
	IndexDeferredMetric = recorderIndexDeferred
)
