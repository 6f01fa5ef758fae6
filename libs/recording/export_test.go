package recording

// pubAckErrorForTest exposes pubAckError to the external tests.
var PubAckErrorForTest = pubAckError

// FailuresMetric is sluice_record_failures_total.
var FailuresMetric = recordFailures
