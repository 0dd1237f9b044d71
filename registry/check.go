package registry

import "fmt"

// CheckChange reports what Reconfigure(c) would refuse now (ErrNotFound,
// ErrBroken, ErrInvalidConfig, ErrBusy) without changing anything or
// recording a reason. A front end that collects a change in parts (the
// ctl file, applied when its writer closes) refuses a bad part at once.
func (ch *Channel) CheckChange(c Change) error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed {
		return fmt.Errorf("%w: channel %s/%s", ErrNotFound, ch.NS, ch.Name)
	}
	if ch.ring == nil {
		return fmt.Errorf("%w: %s/%s", ErrBroken, ch.NS, ch.Name)
	}
	cur := ch.ring.Config()
	cfg, err := c.Apply(cur)
	if err != nil {
		return err
	}
	if ch.noopLocked(c, cur, cfg) {
		return nil
	}
	if ch.busyLocked() || ch.carriedLocked() {
		return fmt.Errorf("%w: configuration can only change on a fresh, idle channel", ErrBusy)
	}
	return nil
}
