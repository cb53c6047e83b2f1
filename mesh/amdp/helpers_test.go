package amdp

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/ccgpmesh/ccgp/crypto"
)

// Keys shared by the tests: deterministic, so failures reproduce.
var (
	appKey   = crypto.DevSigner("amdp-test-app")
	relayA   = crypto.DevSigner("amdp-test-relay-a")
	relayB   = crypto.DevSigner("amdp-test-relay-b")
	otherKey = crypto.DevSigner("amdp-test-other")
)

// newPacket returns an unsigned packet with every field set.
func newPacket(pipe string, seq uint64, payload []byte) *Packet {
	return &Packet{
		PipeId:        pipe,
		Sequence:      seq,
		Operation:     OpWrite,
		Payload:       payload,
		TimeoutHeight: 1000 + seq,
		TimeoutUnixMs: 1_700_000_000_000 + seq,
	}
}

func signedPacket(t testing.TB, pipe string, seq uint64, payload []byte) *Packet {
	t.Helper()
	p := newPacket(pipe, seq, payload)
	if err := SignPacket(p, appKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// payloadFor makes a compressible, JSON-like payload of about n bytes, as a
// contract call would be.
func payloadFor(seq uint64, n int) []byte {
	b := fmt.Appendf(nil, `{"method":"transfer","seq":%d,"args":[`, seq)
	for len(b) < n-2 {
		b = fmt.Appendf(b, `"acct-%06d",`, len(b))
	}
	return append(b[:len(b)-1], "]}"...)
}

// sealedBatch returns a batch of n signed packets from relay A to relay B,
// spread over four pipes.
func sealedBatch(t testing.TB, n, payload int) *Batch {
	t.Helper()
	b := &Batch{Header: &BatchHeader{FromRelay: "relay-a", ToRelay: "relay-b", BatchSeq: 7, CreatedUnixMs: 1_700_000_000_123}}
	for i := range n {
		seq := uint64(i/4 + 1)
		b.Packets = append(b.Packets, signedPacket(t, fmt.Sprintf("pipe-%d", i%4), seq, payloadFor(seq, payload)))
	}
	if err := SealBatch(b, relayA); err != nil {
		t.Fatal(err)
	}
	return b
}

func newReceipt(seq uint64) *Receipt {
	id := PacketID("pipe-0", seq)
	return &Receipt{
		PacketId:   id[:],
		Status:     StatusDelivered,
		DestTxHash: []byte(fmt.Sprintf("tx-%032d", seq)),
		DestHeight: 500 + seq,
		ResultHash: id[:], // any 32 bytes
	}
}

// sealedReceiptBatch returns n receipts from relay B back to relay A.
func sealedReceiptBatch(t testing.TB, n int) *ReceiptBatch {
	t.Helper()
	rb := &ReceiptBatch{Header: &ReceiptBatchHeader{FromRelay: "relay-b", ToRelay: "relay-a", BatchSeq: 7}}
	for i := range n {
		rb.Receipts = append(rb.Receipts, newReceipt(uint64(i+1)))
	}
	if n > 1 {
		rb.Receipts[1].Status = StatusFailed
		rb.Receipts[1].DestTxHash = nil
		rb.Receipts[1].ResultHash = nil
		rb.Receipts[1].Reason = "contract reverted: insufficient balance"
	}
	if err := SealReceiptBatch(rb, relayB); err != nil {
		t.Fatal(err)
	}
	return rb
}

// bytesAllocated returns the bytes f allocates, averaged over runs.
func bytesAllocated(runs int, f func()) uint64 {
	f() // warm up lazily initialised state
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}
