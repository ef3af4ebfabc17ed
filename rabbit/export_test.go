package rabbit

// MaxNackResends is how often Publish resends a nacked message, for the
// tests that play the nacks.
const MaxNackResends = maxNackResends

// OpenPublishChannels is how many channels of the publishing pool are
// open now.
func (b *Broker) OpenPublishChannels() int {
	s := b.pub.current()
	if s == nil {
		return 0
	}
	n := 0
	for i := range s.pool {
		if pc := s.pool[i].Load(); pc != nil && !pc.retired.Load() {
			select {
			case <-pc.end:
			default:
				n++
			}
		}
	}
	return n
}
