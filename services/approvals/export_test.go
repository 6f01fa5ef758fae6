package approvals

// The metrics, for the tests.
var (
	OpenedMetric  = approvalsOpened
	DecidedMetric = approvalsDecided
	PendingMetric = approvalsPending
)
