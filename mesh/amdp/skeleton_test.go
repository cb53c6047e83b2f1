package amdp

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
)

func skeletonFixture() (*Batch, *ReceiptBatch) {
	b := &Batch{Header: &BatchHeader{FromRelay: "relay-a", ToRelay: "relay-b", BatchSeq: 7, MerkleRoot: bytes.Repeat([]byte{1}, 32)},
		Packets: []*Packet{newPacket("pipe-a", 1, []byte("payload one")), newPacket("pipe-b", 9, []byte("payload two"))}}
	id0, id1 := b.Packets[0].ID(), b.Packets[1].ID()
	rb := &ReceiptBatch{Header: &ReceiptBatchHeader{FromRelay: "relay-b", ToRelay: "relay-a", BatchSeq: 7},
		Receipts: []*Receipt{{PacketId: id0[:], Status: StatusDelivered}, {PacketId: id1[:], Status: StatusRejected}}}
	return b, rb
}

func TestSkeleton(t *testing.T) {
	b, _ := skeletonFixture()
	s := b.Skeleton()
	if s.Header.FromRelay != "relay-a" || s.Header.ToRelay != "relay-b" || s.Header.BatchSeq != 7 || s.Header.MerkleRoot != nil {
		t.Fatalf("header %v", s.Header)
	}
	for i, p := range s.Packets {
		if p.ID() != b.Packets[i].ID() || p.Payload != nil || p.Credential != nil {
			t.Fatalf("packet %d: %v", i, p)
		}
	}
	if proto.Size(s) >= proto.Size(b) {
		t.Fatalf("skeleton %d bytes, batch %d", proto.Size(s), proto.Size(b))
	}
}

func TestSkeletonRecord(t *testing.T) {
	b, rb := skeletonFixture()
	rec, err := EncodeSkeletonRecord(b.Skeleton(), rb)
	if err != nil {
		t.Fatal(err)
	}
	gb, grb, err := DecodeSkeletonRecord(rec, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(gb, b.Skeleton()) || !proto.Equal(grb, rb) {
		t.Fatalf("round trip: %v %v", gb, grb)
	}
	noPipe := b.Skeleton()
	noPipe.Packets[1].PipeId = ""
	noPipeRec, _ := EncodeSkeletonRecord(noPipe, rb)
	noHeader, _ := EncodeSkeletonRecord(&Batch{Packets: b.Skeleton().Packets}, rb)
	extra := proto.Clone(rb).(*ReceiptBatch)
	extra.Receipts = append(extra.Receipts, rb.Receipts[0])
	extraRec, _ := EncodeSkeletonRecord(b.Skeleton(), extra)
	empty, _ := EncodeSkeletonRecord(&Batch{Header: b.Header}, rb)
	for _, tc := range []struct {
		name string
		rec  []byte
		l    Limits
		want error
	}{
		{"empty", nil, Limits{}, ErrMalformed},
		{"bad prefix", []byte{0xff, 0xff}, Limits{}, ErrMalformed},
		{"prefix past the end", append([]byte{0x7f}, rec[1:10]...), Limits{}, ErrMalformed},
		{"garbage", []byte("\x05garbage"), Limits{}, ErrMalformed},
		{"no header", noHeader, Limits{}, ErrMalformed},
		{"packet without a pipe", noPipeRec, Limits{}, ErrMalformed},
		{"more receipts than packets", extraRec, Limits{}, ErrMalformed},
		{"no packets", empty, Limits{}, ErrTooManyPackets},
		{"over the packet limit", rec, Limits{MaxPacketsPerBatch: 1}, ErrTooManyPackets},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := DecodeSkeletonRecord(tc.rec, tc.l); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzDecodeSkeletonRecord: stored records are local, but a disk can
// return anything; the decoder must refuse, not panic, and what it
// accepts must encode back to a record that decodes the same.
func FuzzDecodeSkeletonRecord(f *testing.F) {
	b, rb := skeletonFixture()
	rec, _ := EncodeSkeletonRecord(b.Skeleton(), rb)
	for _, seed := range [][]byte{rec, rec[:len(rec)/2], nil, {0}, {0x01, 0x0a}, []byte("\x05garbage")} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		gb, grb, err := DecodeSkeletonRecord(v, Limits{MaxPacketsPerBatch: 64})
		if err != nil {
			return
		}
		again, err := EncodeSkeletonRecord(gb, grb)
		if err != nil {
			t.Fatal(err)
		}
		gb2, grb2, err := DecodeSkeletonRecord(again, Limits{MaxPacketsPerBatch: 64})
		if err != nil || !proto.Equal(gb, gb2) || !proto.Equal(grb, grb2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
