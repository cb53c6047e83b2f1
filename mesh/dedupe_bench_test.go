package mesh

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// BenchmarkDedupe is the delivery record's work for one received batch of
// 512 new packets: look them up (bloom-filter misses), mark them in flight
// (one synced pebble batch), store their receipts and clear the markers
// (another synced batch). The store grows by 512 receipts per iteration,
// as a relay's does.
func BenchmarkDedupe(b *testing.B) {
	const perBatch = 512
	s, err := OpenDedupeStore(filepath.Join(b.TempDir(), "dedupe"), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ids := make([][32]byte, perBatch)
	receipts := make([]*amdp.Receipt, perBatch)
	next := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		for i := range ids {
			next++
			binary.BigEndian.PutUint64(ids[i][:], next)
			ids[i][31] = 0xd5
			receipts[i] = &amdp.Receipt{PacketId: ids[i][:], Status: amdp.StatusDelivered, DestTxHash: ids[i][:],
				DestHeight: next, ResultHash: ids[i][:]}
		}
		stored, marked, err := s.Lookup(ids)
		if err != nil {
			b.Fatal(err)
		}
		for i := range ids {
			if stored[i] != nil || marked[i] {
				b.Fatalf("new id %x found in the store", ids[i])
			}
		}
		if err := s.MarkInFlight(ids); err != nil {
			b.Fatal(err)
		}
		if err := s.Commit(receipts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "packets/s")
}
