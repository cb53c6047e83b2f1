package simchain

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// testInterval keeps the tests fast; the default 50ms is the demo's.
const testInterval = 10 * time.Millisecond

func openChain(t testing.TB, dir string, opts Options) *Chain {
	t.Helper()
	if opts.ID == "" {
		opts.ID = "sim-a"
	}
	if opts.BlockInterval == 0 {
		opts.BlockInterval = testInterval
	}
	c, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// signed builds the packet (pipe, seq) signed by the dev key "app".
func signed(t testing.TB, pipe string, seq uint64, payload string) *amdp.Packet {
	t.Helper()
	p := &amdp.Packet{
		PipeId:        pipe,
		Sequence:      seq,
		Operation:     amdp.OpWrite,
		Payload:       []byte(payload),
		TimeoutUnixMs: uint64(time.Now().Add(time.Minute).UnixMilli()),
	}
	if err := amdp.SignPacket(p, crypto.DevSigner("app")); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// collect reads blocks from a stream until cond says stop.
func collect(t testing.TB, ch <-chan subchain.Block, d time.Duration, stop func([]subchain.Block) bool) []subchain.Block {
	t.Helper()
	var got []subchain.Block
	timer := time.NewTimer(d)
	defer timer.Stop()
	for !stop(got) {
		select {
		case b, ok := <-ch:
			if !ok {
				t.Fatalf("stream closed after %d blocks", len(got))
			}
			got = append(got, b)
		case <-timer.C:
			t.Fatalf("timed out after %v with %d blocks", d, len(got))
		}
	}
	return got
}

func events(bs []subchain.Block) []subchain.Event {
	var evs []subchain.Event
	for _, b := range bs {
		evs = append(evs, b.Events...)
	}
	return evs
}

func countEvents(n int) func([]subchain.Block) bool {
	return func(bs []subchain.Block) bool { return len(events(bs)) >= n }
}

func pipeName(i int) string { return fmt.Sprintf("pipe-%d", i) }
