package mesh

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// BenchmarkSendBatch sends batches of 512 packets of 256 bytes from
// relay-a to relay-b over loopback QUIC: encode and compress, one stream
// each way, the receiver's relay and 512 packet signature checks, two
// synced pebble batches, the in-memory chain, signed receipts and their
// check by the sender. Both relays run in this process, so allocations
// are both sides'. Batches are signed before the timer starts; each is
// new, so every iteration delivers.
func BenchmarkSendBatch(b *testing.B) {
	for _, inFlight := range []int{1, 4} {
		b.Run(map[int]string{1: "sequential", 4: "inflight-4"}[inFlight], func(b *testing.B) {
			benchSend(b, inFlight)
		})
	}
}

func benchSend(b *testing.B, inFlight int) {
	const perBatch, size = 512, 256
	n := newTestNet(b, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	n.start("relay-b")
	a, to := n.start("relay-a", sendOnly), "relay-b"
	batches := make([]*amdp.Batch, b.N)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ps := make([]*amdp.Packet, perBatch)
				for j := range ps {
					ps[j] = n.signedPacket("ab-1", uint64(i*perBatch+j+1), size)
				}
				batches[i] = sealBatch(b, n.relays["relay-a"].signer, "relay-a", "relay-b", uint64(i+1), ps)
			}
		}()
	}
	for i := range b.N {
		next <- i
	}
	close(next)
	wg.Wait()

	b.ReportAllocs()
	b.ResetTimer()
	work := make(chan *amdp.Batch)
	errs := make(chan error, inFlight)
	var senders sync.WaitGroup
	for range inFlight {
		senders.Add(1)
		go func() {
			defer senders.Done()
			for batch := range work {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := a.Send(ctx, to, batch)
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for _, batch := range batches {
		select {
		case work <- batch:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(work)
	senders.Wait()
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "packets/s")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/batch")
}
