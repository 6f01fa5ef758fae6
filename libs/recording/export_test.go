package recording

// pubAckErrorForTest exposes pubAckError to the external tests.
var PubAckErrorForTest = pubAckError
