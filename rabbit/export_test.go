package rabbit

// MaxNackResends is how often Publish resends a nacked message, for the
// tests that play the nacks.
const MaxNackResends = maxNackResends
