// Package backoff is the one retry schedule of the relays: exponential,
// capped, optionally jittered. (The compensator's state machine keeps its
// own policy: it is deterministic and takes its jitter as a function.)
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is a retry schedule. The wait before retry n (n ≥ 1: after n
// failures) is Min doubled n-1 times, capped at Max. With Jitter it is
// drawn uniformly from [d/2, d], so that parties that failed together (the
// relays that lost one peer) do not retry in step.
type Policy struct {
	Min, Max time.Duration
	Jitter   bool
}

// Delay is the wait before retry n.
func (p Policy) Delay(n int) time.Duration {
	d := p.Max
	if n <= 62 {
		if s := p.Min << max(n-1, 0); s > 0 && s < d {
			d = s
		}
	}
	if p.Jitter && d > 0 {
		return d/2 + rand.N(d/2+1)
	}
	return d
}

// Wait sleeps for d, or until ctx ends: then it returns ctx.Err().
func Wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
