package mesh

import (
	"testing"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// BenchmarkCheckPackets is the receiving relay's check of one batch of
// 512 packets (256-byte payloads, one pipe): registry checks and every
// packet's stage-1 signature, on all cores. The endpoint is never run.
func BenchmarkCheckPackets(b *testing.B) {
	const perBatch, size = 512, 256
	n := newTestNet(b, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	ep := n.start("relay-b")
	packets := make([]*amdp.Packet, perBatch)
	for i := range packets {
		packets[i] = n.signedPacket("ab-1", uint64(i+1), size)
	}
	b.ReportAllocs()
	for b.Loop() {
		for i, err := range ep.checkPackets("relay-a", packets) {
			if err != nil {
				b.Fatalf("packet %d: %v", i, err)
			}
		}
	}
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "packets/s")
}
