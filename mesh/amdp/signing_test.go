package amdp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// cat builds expected canonical bytes by hand, independently of the
// encoder, so that these tests pin the documented layout.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
func be32(v uint32) []byte       { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
func be64(v uint64) []byte       { return append(be32(uint32(v>>32)), be32(uint32(v))...) }
func lp(b string) []byte         { return append(be32(uint32(len(b))), b...) }

func TestPacketSigningBytesLayout(t *testing.T) {
	p := &Packet{
		PipeId: "pipe", Sequence: 2, Operation: OpRead, Payload: []byte("hi"),
		TimeoutHeight: 3, TimeoutUnixMs: 4,
		Credential: &Credential{Signer: bytes.Repeat([]byte{0xaa}, 20), Suite: "ed25519"},
		Signature:  []byte("not covered"),
	}
	want := cat([]byte("ccgp/amdp/v1/packet\x00"), lp("pipe"), be64(2), be32(2), lp("hi"),
		be64(3), be64(4), lp(string(bytes.Repeat([]byte{0xaa}, 20))), lp("ed25519"))
	if got := PacketSigningBytes(p); !bytes.Equal(got, want) {
		t.Fatalf("packet signing bytes\n got %x\nwant %x", got, want)
	}
	// A nil credential encodes as empty signer and suite.
	p.Credential = nil
	want = cat([]byte("ccgp/amdp/v1/packet\x00"), lp("pipe"), be64(2), be32(2), lp("hi"),
		be64(3), be64(4), lp(""), lp(""))
	if got := PacketSigningBytes(p); !bytes.Equal(got, want) {
		t.Fatalf("nil credential\n got %x\nwant %x", got, want)
	}
}

func TestHeaderAndReceiptBytesLayout(t *testing.T) {
	root := bytes.Repeat([]byte{1}, 32)
	bh := &BatchHeader{FromRelay: "a", ToRelay: "bc", BatchSeq: 5, PacketCount: 6, MerkleRoot: root, CreatedUnixMs: 7}
	want := cat([]byte("ccgp/amdp/v1/batch-header\x00"), lp("a"), lp("bc"), be64(5), be32(6), lp(string(root)), be64(7))
	if got := BatchHeaderSigningBytes(bh); !bytes.Equal(got, want) {
		t.Errorf("batch header\n got %x\nwant %x", got, want)
	}
	rh := &ReceiptBatchHeader{FromRelay: "bc", ToRelay: "a", BatchSeq: 5, ReceiptCount: 6, MerkleRoot: root}
	want = cat([]byte("ccgp/amdp/v1/receipt-batch-header\x00"), lp("bc"), lp("a"), be64(5), be32(6), lp(string(root)))
	if got := ReceiptBatchHeaderSigningBytes(rh); !bytes.Equal(got, want) {
		t.Errorf("receipt batch header\n got %x\nwant %x", got, want)
	}
	r := &Receipt{PacketId: root, Status: StatusRejected, DestTxHash: []byte("tx"), DestHeight: 9, ResultHash: root, Reason: "no"}
	want = cat([]byte("ccgp/amdp/v1/receipt\x00"), lp(string(root)), be32(2), lp("tx"), be64(9), lp(string(root)), lp("no"))
	if got := AppendReceiptBytes(nil, r); !bytes.Equal(got, want) {
		t.Errorf("receipt\n got %x\nwant %x", got, want)
	}
}

// TestPacketIDGolden pins PacketID: changing it would orphan every anchor
// and delivery record already written.
func TestPacketIDGolden(t *testing.T) {
	id := PacketID("pipe-a", 1)
	if want := sha256.Sum256(cat([]byte("ccgp/amdp/v1/packet-id\x00"), lp("pipe-a"), be64(1))); id != want {
		t.Fatalf("PacketID does not follow the documented layout: %x", id)
	}
	const golden = "5ff0de8f80c397870701aa2bbad28aa0e63b8e6feceda8369a80295a7cbceabf"
	if got := hex.EncodeToString(id[:]); got != golden {
		t.Fatalf("PacketID(pipe-a, 1) = %s, want %s", got, golden)
	}
	// Length prefixes keep (pipe, seq) pairs from colliding.
	if PacketID("ab", 1) == PacketID("a", 1) || PacketID("a", 1) == PacketID("a", 2) {
		t.Fatal("distinct packets share an id")
	}
	long := string(bytes.Repeat([]byte{'p'}, 300)) // past the stack buffer
	if PacketID(long, 1) == PacketID(long[:299], 1) {
		t.Fatal("long pipe ids collide")
	}
}

// TestSigningBytesCoverEveryField changes one field at a time and expects
// the signing bytes to change, except for the signature itself.
func TestSigningBytesCoverEveryField(t *testing.T) {
	base := signedPacket(t, "pipe", 1, []byte("payload"))
	orig := PacketSigningBytes(base)
	cases := []struct {
		name    string
		mutate  func(p *Packet)
		covered bool
	}{
		{"pipe_id", func(p *Packet) { p.PipeId = "pipf" }, true},
		{"sequence", func(p *Packet) { p.Sequence++ }, true},
		{"operation", func(p *Packet) { p.Operation = OpRead }, true},
		{"payload", func(p *Packet) { p.Payload = []byte("paylobd") }, true},
		{"payload moved into pipe", func(p *Packet) { p.PipeId, p.Payload = "pipep", []byte("ayload") }, true},
		{"timeout_height", func(p *Packet) { p.TimeoutHeight++ }, true},
		{"timeout_unix_ms", func(p *Packet) { p.TimeoutUnixMs++ }, true},
		{"signer", func(p *Packet) { p.Credential.Signer[0] ^= 1 }, true},
		{"suite", func(p *Packet) { p.Credential.Suite = "ed25518" }, true},
		{"signature", func(p *Packet) { p.Signature[0] ^= 1 }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := clonePacket(base)
			c.mutate(p)
			if changed := !bytes.Equal(PacketSigningBytes(p), orig); changed != c.covered {
				t.Fatalf("changed = %v, want %v", changed, c.covered)
			}
		})
	}
}

func TestAppendSigningBytes(t *testing.T) {
	p := signedPacket(t, "pipe", 1, []byte("payload"))
	prefix := []byte("prefix")
	got := AppendPacketSigningBytes(append([]byte(nil), prefix...), p)
	if !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], PacketSigningBytes(p)) {
		t.Fatal("append variant differs from PacketSigningBytes")
	}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf = AppendPacketSigningBytes(buf[:0], p) }); n != 0 {
		t.Fatalf("AppendPacketSigningBytes into a large enough buffer allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = PacketID("pipe", 1) }); n != 0 {
		t.Fatalf("PacketID allocates %v times", n)
	}
	r := newReceipt(1)
	if n := testing.AllocsPerRun(100, func() { _ = ReceiptLeaf(r) }); n != 0 {
		t.Fatalf("ReceiptLeaf allocates %v times", n)
	}
}
