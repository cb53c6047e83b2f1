package relay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/govchain"
)

// finalWait bounds how long requireFinal waits for the last packet to
// reach its final state; the slowest path (a retry after MANUAL, a
// rollback after the compensator's last attempt) takes a few seconds.
const finalWait = 90 * time.Second

// isFinal reports whether s is a state a packet ends in: the verifier
// confirmed it on the destination chain, the source chain undid it, or a
// person decided.
func isFinal(s govchain.PacketState) bool {
	switch s {
	case govchain.PacketState_PACKET_CONFIRMED, govchain.PacketState_PACKET_ROLLED_BACK, govchain.PacketState_PACKET_RESOLVED:
		return true
	}
	return false
}

// requireFinal is how every fault test ends: it waits (bounded by ctx and
// finalWait) until every packet the cluster's apps sent (c.Tracker) has a
// final state on the governance chain (isFinal), and fails the test
// naming the packets that never got there. The last word is a proven read
// of each packet (Client.PacketStatus): relays' counters and the
// destination chains' records are not evidence of a final state. It
// returns how many packets ended in each state, for the caller to compare
// with what its fault should produce. Call it from the test's goroutine.
func requireFinal(ctx context.Context, t *testing.T, c *bench.Cluster) map[govchain.PacketState]int {
	t.Helper()
	return requireStates(ctx, t, c, c.Tracker.SentPackets(), isFinal)
}

// requireStates waits (bounded by ctx and finalWait) until each of refs
// is in a state that accept takes, read with proofs, and fails the test
// otherwise; it returns how many ended in each state. Tests that leave
// packets in MANUAL on purpose check that with it.
func requireStates(ctx context.Context, t *testing.T, c *bench.Cluster, refs []*govchain.PacketRef,
	accept func(govchain.PacketState) bool) map[govchain.PacketState]int {
	t.Helper()
	if len(refs) == 0 {
		t.Fatal("requireStates: no packets to check (did the test record what it sent in c.Tracker?)")
	}
	ctx, cancel := context.WithTimeout(ctx, finalWait)
	defer cancel()
	var last map[string]govchain.PacketState // the packets not accepted at the last look, and their states
	var lastErr error
	for {
		// Poll with the chain's lists (cheap, unproven) until every
		// packet looks done; then read each with proofs. A packet can
		// move on between the two reads (a resolution carried out), so
		// a proven read that disagrees sends the loop round again.
		states, err := listStates(ctx, c, refs)
		if err == nil {
			pending := 0
			for _, r := range refs {
				if !accept(states[pkey{r.Pipe, r.Seq}]) {
					pending++
				}
			}
			if pending == 0 {
				got, notYet, err := provenStates(ctx, c, refs, accept)
				if err == nil && len(notYet) == 0 {
					return got
				}
				last, lastErr = notYet, err
			} else {
				last = map[string]govchain.PacketState{}
				for _, r := range refs {
					if s := states[pkey{r.Pipe, r.Seq}]; !accept(s) {
						last[fmt.Sprintf("%s/%d", r.Pipe, r.Seq)] = s
					}
				}
				lastErr = nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d packets not in their final state on the governance chain after %s (err %v): %s",
				len(last), len(refs), finalWait, lastErr, describe(last))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// listStates derives each packet's state from the pipes' ledgers and the
// exception records, as listed by the node (no proofs): the poll.
// pkey is a packet's pipe and sequence as a map key (PacketRef, a proto
// message, is not comparable).
type pkey struct {
	pipe string
	seq  uint64
}

func listStates(ctx context.Context, c *bench.Cluster, refs []*govchain.PacketRef) (map[pkey]govchain.PacketState, error) {
	span := map[string][2]uint64{} // pipe -> lowest, highest seq asked about
	for _, r := range refs {
		s, ok := span[r.Pipe]
		if !ok {
			s = [2]uint64{r.Seq, r.Seq}
		}
		span[r.Pipe] = [2]uint64{min(s[0], r.Seq), max(s[1], r.Seq)}
	}
	out := map[pkey]govchain.PacketState{}
	for pipe, s := range span {
		for from := s[0]; from <= s[1]; from += 10000 { // Ledger's bound per call
			rows, err := c.Gov.Ledger(ctx, pipe, from, min(s[1], from+9999))
			if err != nil {
				return nil, err
			}
			for _, row := range rows {
				out[pkey{pipe, row.Seq}] = row.State
			}
		}
	}
	// A packet never anchored is in no ledger entry, but may have an
	// exception record (MANUAL before its batch was anchored).
	exs, err := c.Gov.Exceptions(ctx, govchain.PacketState_PACKET_STATE_UNSPECIFIED)
	if err != nil {
		return nil, err
	}
	for _, ex := range exs {
		out[pkey{ex.Pipe, ex.Seq}] = ex.State
	}
	return out, nil
}

// provenStates reads each packet's state with proofs at one height per
// packet (PacketStatus) and returns the counts by state and the packets
// that accept does not take. A proven read waits for the block after its
// height, so the reads go 32 at a time: reads at one height share the wait.
func provenStates(ctx context.Context, c *bench.Cluster, refs []*govchain.PacketRef,
	accept func(govchain.PacketState) bool) (map[govchain.PacketState]int, map[string]govchain.PacketState, error) {
	states := make([]govchain.PacketState, len(refs))
	errs := make([]error, len(refs))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i, r := range refs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			st, _, err := c.Gov.PacketStatus(ctx, r.Pipe, r.Seq)
			if err != nil {
				errs[i] = fmt.Errorf("%s/%d: %w", r.Pipe, r.Seq, err)
				return
			}
			states[i] = st.State
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	got := map[govchain.PacketState]int{}
	notYet := map[string]govchain.PacketState{}
	for i, r := range refs {
		got[states[i]]++
		if !accept(states[i]) {
			notYet[fmt.Sprintf("%s/%d", r.Pipe, r.Seq)] = states[i]
		}
	}
	return got, notYet, nil
}

// describe lists up to ten packets with their states, and how many more.
func describe(m map[string]govchain.PacketState) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i == 10 {
			fmt.Fprintf(&b, " and %d more", len(keys)-10)
			break
		}
		fmt.Fprintf(&b, "%s %s; ", k, govchain.EnumName(m[k].String()))
	}
	return b.String()
}
