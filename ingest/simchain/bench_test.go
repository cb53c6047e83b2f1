package simchain

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// benchPacket is a structurally valid packet whose signature is not
// computed: the chain does not verify signatures, and signing would
// dominate what the benchmarks measure.
func benchPacket(addr crypto.Address, pipe string, seq uint64, payload []byte) *amdp.Packet {
	return &amdp.Packet{
		PipeId:        pipe,
		Sequence:      seq,
		Operation:     amdp.OpWrite,
		Payload:       payload,
		TimeoutUnixMs: uint64(time.Now().Add(time.Hour).UnixMilli()),
		Credential:    &amdp.Credential{Signer: addr[:], Suite: string(crypto.SuiteEd25519)},
		Signature:     make([]byte, 64),
	}
}

// BenchmarkSubmit measures source requests per second from submission to
// committed block, one pipe per goroutine.
func BenchmarkSubmit(b *testing.B) {
	c := openChain(b, b.TempDir(), Options{BlockInterval: 5 * time.Millisecond})
	ctx := context.Background()
	payload := make([]byte, 100)
	addr := crypto.SignerAddress(crypto.DevSigner("bench"))
	var pipes atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		pipe := fmt.Sprintf("bench/%d", pipes.Add(1))
		for seq := uint64(1); pb.Next(); seq++ {
			if _, err := c.Submit(ctx, benchPacket(addr, pipe, seq, payload)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for c.Stats().Requests < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkDeliver measures packets delivered per second (committed, with
// results), in calls of 100 packets from 8 goroutines at once, as relays
// deliver batches.
func BenchmarkDeliver(b *testing.B) {
	c := openChain(b, b.TempDir(), Options{BlockInterval: 5 * time.Millisecond})
	ctx := context.Background()
	payload := make([]byte, 100)
	addr := crypto.SignerAddress(crypto.DevSigner("bench"))
	const batch, workers = 100, 8
	jobs := make(chan []*amdp.Packet, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ps := range jobs {
				if _, err := c.Deliver(ctx, ps); err != nil {
					b.Error(err)
				}
			}
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	ps := make([]*amdp.Packet, 0, batch)
	for i := range b.N {
		ps = append(ps, benchPacket(addr, "in", uint64(i+1), payload))
		if len(ps) == batch || i == b.N-1 {
			jobs <- ps
			ps = make([]*amdp.Packet, 0, batch)
		}
	}
	close(jobs)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkt/s")
	if s := c.Stats(); s.Delivered != uint64(b.N) {
		b.Fatalf("delivered %d of %d", s.Delivered, b.N)
	}
}
