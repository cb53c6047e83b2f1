package bench

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/ccgpmesh/ccgp/ingest/simchain"
)

// chainClock tells when things were committed on the simulated chains: it
// samples every chain's head every millisecond and keeps, per chain, the
// first moment each height and each cumulative request count was seen.
// A packet's source commit time is then the moment its chain's request
// count reached the packet's submission number (one feeder submits to
// each chain, so submission order is commit order), and its delivery time
// is the moment its destination chain reached the receipt's height. The
// error is the sampling interval plus scheduling delay.
type chainClock struct {
	base   time.Time // monotonic origin of every stamp
	chains []*simchain.Chain
	every  time.Duration
	keep   time.Duration // marks older than this are dropped

	mu    sync.Mutex // guards marks
	marks [][]mark   // per chain, in height order
}

// mark is a chain head as first seen.
type mark struct {
	height   uint64
	requests uint64 // cumulative committed source requests
	at       time.Duration
}

func newChainClock(chains []*simchain.Chain) *chainClock {
	return &chainClock{base: time.Now(), chains: chains, every: time.Millisecond, keep: 5 * time.Minute,
		marks: make([][]mark, len(chains))}
}

// now is the clock's current stamp.
func (k *chainClock) now() time.Duration { return time.Since(k.base) }

// run samples until ctx ends.
func (k *chainClock) run(ctx context.Context) {
	t := time.NewTicker(k.every)
	defer t.Stop()
	lastPrune := time.Duration(0)
	for {
		k.sample()
		if now := k.now(); now-lastPrune > time.Minute {
			k.prune(now)
			lastPrune = now
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *chainClock) sample() {
	at := k.now()
	for i, c := range k.chains {
		st := c.Stats()
		k.mu.Lock()
		ms := k.marks[i]
		if len(ms) == 0 || st.Head > ms[len(ms)-1].height {
			k.marks[i] = append(ms, mark{height: st.Head, requests: st.Requests, at: at})
		}
		k.mu.Unlock()
	}
}

func (k *chainClock) prune(now time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, ms := range k.marks {
		j := sort.Search(len(ms), func(j int) bool { return now-ms[j].at < k.keep })
		if j > 0 && j < len(ms) {
			k.marks[i] = append(ms[:0:0], ms[j:]...)
		}
	}
}

// heightTime is when chain first had a head of at least h.
func (k *chainClock) heightTime(chain int, h uint64) (time.Duration, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ms := k.marks[chain]
	j := sort.Search(len(ms), func(j int) bool { return ms[j].height >= h })
	if j == len(ms) {
		return 0, false
	}
	return ms[j].at, true
}

// requestTime is when chain first had at least n committed requests.
func (k *chainClock) requestTime(chain int, n uint64) (time.Duration, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ms := k.marks[chain]
	j := sort.Search(len(ms), func(j int) bool { return ms[j].requests >= n })
	if j == len(ms) {
		return 0, false
	}
	return ms[j].at, true
}
