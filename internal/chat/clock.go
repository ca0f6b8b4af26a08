package chat

import "time"

// instant is a reading of the monotonic clock: nanoseconds since the
// process started, plus one, so that no reading is zero and zero can mean
// "none". It takes 8 bytes where a time.Time takes 24; the timestamps
// every connection carries (flood control, login and write deadlines) use
// it, since an idle server holds a set of them per user.
type instant int64

var clockStart = time.Now()

// nowInstant reads the clock.
func nowInstant() instant { return instant(time.Since(clockStart)) + 1 }

func (t instant) add(d time.Duration) instant { return t + instant(d) }

// sub is the time from u to t.
func (t instant) sub(u instant) time.Duration { return time.Duration(t - u) }
