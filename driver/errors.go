package driver

// MarkRetryable wraps err so that broker.IsRetryable reports true (unless
// err wraps broker.ErrUnauthorized: that is never retryable). Adapters use
// it for wire errors they classify as transient. It returns nil for nil.
func MarkRetryable(err error) error {
	if err == nil {
		return nil
	}
	return &classified{err: err, retryable: true}
}

// MarkFatal wraps err so that broker.IsRetryable reports false. It returns
// nil for nil.
func MarkFatal(err error) error {
	if err == nil {
		return nil
	}
	return &classified{err: err, retryable: false}
}

// classified is an error with its retryability decided by the adapter.
type classified struct {
	err       error
	retryable bool
}

func (c *classified) Error() string   { return c.err.Error() }
func (c *classified) Unwrap() error   { return c.err }
func (c *classified) Retryable() bool { return c.retryable }
