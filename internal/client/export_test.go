package client

// PendingCount returns how many requests c has sent and not yet seen
// answered, for tests that must know a request is in flight.
func PendingCount(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}
