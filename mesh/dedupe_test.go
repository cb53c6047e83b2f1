package mesh

import (
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

func TestDedupeStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dedupe")
	s, err := OpenDedupeStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := [][32]byte{amdp.PacketID("p", 1), amdp.PacketID("p", 2), amdp.PacketID("p", 3)}
	rs, marked, err := s.Lookup(ids)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ids {
		if rs[i] != nil || marked[i] {
			t.Fatalf("fresh store: %d has receipt %v, marked %v", i, rs[i], marked[i])
		}
	}
	if err := s.MarkInFlight(ids[:2]); err != nil {
		t.Fatal(err)
	}
	r0 := &amdp.Receipt{PacketId: ids[0][:], Status: amdp.StatusDelivered, DestTxHash: []byte("tx"), DestHeight: 7, ResultHash: ids[2][:]}
	if err := s.Commit([]*amdp.Receipt{r0}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Everything survives a reopen.
	s, err = OpenDedupeStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rs, marked, err = s.Lookup(ids)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(rs[0], r0) || marked[0] {
		t.Errorf("committed packet: receipt %v, marked %v; want the receipt, marker cleared", rs[0], marked[0])
	}
	if rs[1] != nil || !marked[1] {
		t.Errorf("marked packet: receipt %v, marked %v; want marked only", rs[1], marked[1])
	}
	if rs[2] != nil || marked[2] {
		t.Errorf("untouched packet: receipt %v, marked %v", rs[2], marked[2])
	}
	if r, ok, err := s.Receipt(ids[0]); err != nil || !ok || !proto.Equal(r, r0) {
		t.Errorf("Receipt: %v %v %v", r, ok, err)
	}
	if n, err := s.countMarkers(); err != nil || n != 1 {
		t.Errorf("markers %d, %v; want 1", n, err)
	}
	if err := s.Commit([]*amdp.Receipt{{PacketId: []byte("short")}}); err == nil {
		t.Error("Commit took a receipt with a 5-byte packet id")
	}
}

func TestDedupeStoreIsExclusive(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenDedupeStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s2, err := OpenDedupeStore(dir, nil); err == nil {
		s2.Close()
		t.Fatal("a second store opened the same directory")
	}
}
