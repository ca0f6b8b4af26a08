package chat

import "time"

// bucket is a session's flood control: a token bucket on requests,
// Config.Rate tokens a second up to Config.Burst (Rate 0: off). It is
// refilled once per read and spent one token per request. The request
// that spends the last token is handled, and the session stops there: the
// rest of what was read is kept (session.pending), and the link reads
// nothing more until the bucket has a token again and the rest is handled.
// So a client that sends faster than the rate is slowed to it, by
// backpressure: nothing is dropped, no reply changes. One that keeps the
// server holding it back for Config.FloodTimeout in a row is closed as a
// flood. Owned by the reading side.
type bucket struct {
	tokens    float64
	last      instant // when it was refilled; zero before the first
	heldSince instant // when the current stretch of holding back began; zero if none
}

// refill brings the bucket up to now. A full bucket ends a stretch of
// holding back: the client has kept within the rate for a whole burst.
func (b *bucket) refill(cfg *Config, now instant) {
	if b.last == 0 {
		b.tokens = float64(cfg.Burst)
	} else {
		b.tokens = min(float64(cfg.Burst), b.tokens+cfg.Rate*now.sub(b.last).Seconds())
	}
	b.last = now
	if b.tokens >= float64(cfg.Burst) {
		b.heldSince = 0
	}
}

// spend takes a token for a request and reports whether the session must
// stop after it.
func (b *bucket) spend() (stop bool) {
	b.tokens--
	return b.tokens < 0
}

// hold says how long the link must wait before the session goes on, now
// that it stopped, and whether it has been held back so long that it is a
// flood.
func (b *bucket) hold(cfg *Config, now instant) (wait time.Duration, flood bool) {
	if b.heldSince == 0 {
		b.heldSince = now
	}
	return time.Duration(-b.tokens / cfg.Rate * float64(time.Second)), now.sub(b.heldSince) > cfg.FloodTimeout
}
