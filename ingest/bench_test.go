package ingest_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/ingest"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// BenchmarkListener measures records per second from a simulated chain's
// stored blocks into an in-process Kafka (kfake, 8 partitions), acks
// included: the chain holds b.N requests on 16 pipes (100-byte payloads)
// before the timer starts.
func BenchmarkListener(b *testing.B) {
	c := newChain(b, simchain.Options{BlockInterval: 5 * time.Millisecond, FinalityDepth: -1})
	fill(b, c, b.N, 16)
	kc := newCluster(b)
	l, err := ingest.NewListener(c, newProducer(b, kc), ingest.FileCheckpoint(filepath.Join(b.TempDir(), "cp")))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	r := start(b, l)
	for l.Stats().Produced < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if err := r.stop(b); err != nil {
		b.Fatal(err)
	}
}

// fill submits n requests over pipes pipes and waits until they are all
// in final blocks. The signatures are not computed (the chain and the
// listener do not verify them), so that filling is quick.
func fill(b *testing.B, c *simchain.Chain, n, pipes int) {
	b.Helper()
	addr := crypto.SignerAddress(crypto.DevSigner("bench"))
	payload := make([]byte, 100)
	timeout := uint64(time.Now().Add(time.Hour).UnixMilli())
	var wg sync.WaitGroup
	for i := range pipes {
		wg.Go(func() {
			pipe := fmt.Sprintf("bench/%d", i)
			for seq := uint64(1); seq <= uint64(n/pipes+1) && int(seq-1)*pipes+i < n; seq++ {
				p := &amdp.Packet{
					PipeId: pipe, Sequence: seq, Operation: amdp.OpWrite, Payload: payload, TimeoutUnixMs: timeout,
					Credential: &amdp.Credential{Signer: addr[:], Suite: string(crypto.SuiteEd25519)},
					Signature:  make([]byte, 64),
				}
				if _, err := c.Submit(context.Background(), p); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for c.Stats().Requests < uint64(n) {
		time.Sleep(time.Millisecond)
	}
}
