package amdp

import (
	"errors"
	"testing"

	"github.com/ccgpmesh/ccgp/crypto"
)

func TestSignVerifyPacket(t *testing.T) {
	p := signedPacket(t, "pipe-a", 1, []byte("payload"))
	if err := p.Validate(DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	if addr := crypto.SignerAddress(appKey); string(p.Credential.Signer) != string(addr[:]) || p.Credential.Suite != "ed25519" {
		t.Fatalf("credential %x/%s does not name the signer", p.Credential.Signer, p.Credential.Suite)
	}
	if err := VerifyPacket(p, appKey.Suite(), appKey.PublicKey()); err != nil {
		t.Fatalf("valid packet rejected: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(p *Packet)
		suite  crypto.Suite
		pub    []byte
		want   error
		field  string
	}{
		{"flipped signature", func(p *Packet) { p.Signature[0] ^= 1 }, "", nil, ErrBadSignature, "signature"},
		{"short signature", func(p *Packet) { p.Signature = p.Signature[:10] }, "", nil, ErrBadSignature, "signature"},
		{"tampered payload", func(p *Packet) { p.Payload[0] ^= 1 }, "", nil, ErrBadSignature, "signature"},
		{"tampered sequence", func(p *Packet) { p.Sequence++ }, "", nil, ErrBadSignature, "signature"},
		{"tampered timeout", func(p *Packet) { p.TimeoutHeight++ }, "", nil, ErrBadSignature, "signature"},
		{"other key", func(p *Packet) {}, "", otherKey.PublicKey(), ErrBadCredential, "credential.signer"},
		{"other suite", func(p *Packet) {}, "ml-dsa-65", nil, ErrBadCredential, "credential.suite"},
		{"unknown suite named", func(p *Packet) { p.Credential.Suite = "rsa" }, "rsa", nil, ErrBadCredential, "credential.signer"},
		{"no credential", func(p *Packet) { p.Credential = nil }, "", nil, ErrMissingField, "credential"},
		// Re-signing with another key but keeping the credential: the
		// credential matches the pipe key, the signature does not.
		{"signed by other key", func(p *Packet) {
			sig, _ := otherKey.Sign(PacketSigningBytes(p))
			p.Signature = sig
		}, "", nil, ErrBadSignature, "signature"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := signedPacket(t, "pipe-a", 1, []byte("payload"))
			c.mutate(p)
			suite, pub := appKey.Suite(), appKey.PublicKey()
			if c.suite != "" {
				suite = c.suite
			}
			if c.pub != nil {
				pub = c.pub
			}
			checkRejection(t, VerifyPacket(p, suite, pub), c.want, c.field)
		})
	}
}

// A key the registry holds in a suite this build cannot verify is a
// credential problem, not a forged signature.
func TestVerifyUnknownSuite(t *testing.T) {
	p := newPacket("pipe", 1, nil)
	p.Credential = &Credential{Suite: "rsa"}
	addr := crypto.AddressOf("rsa", []byte("key"))
	p.Credential.Signer = addr[:]
	p.Signature = []byte("sig")
	err := VerifyPacket(p, "rsa", []byte("key"))
	checkRejection(t, err, ErrBadCredential, "signature")
}

type failingSigner struct{ crypto.Signer }

func (failingSigner) Sign([]byte) ([]byte, error) { return nil, errors.New("hsm offline") }

func TestSignerFailure(t *testing.T) {
	s := failingSigner{appKey}
	if err := SignPacket(newPacket("p", 1, nil), s); err == nil || Reason(err) != "other" {
		t.Errorf("SignPacket: %v", err)
	}
	b := sealedBatch(t, 2, 10)
	if err := SealBatch(b, s); err == nil || Reason(err) != "other" {
		t.Errorf("SealBatch: %v", err)
	}
	rb := sealedReceiptBatch(t, 2)
	if err := SealReceiptBatch(rb, s); err == nil || Reason(err) != "other" {
		t.Errorf("SealReceiptBatch: %v", err)
	}
}

func TestSealVerifyBatch(t *testing.T) {
	l := DefaultLimits()
	b := sealedBatch(t, 5, 64)
	if b.Header.PacketCount != 5 || len(b.Header.MerkleRoot) != 32 {
		t.Fatalf("header not completed: %+v", b.Header)
	}
	if root := MerkleRoot(PacketIDs(b.Packets)); string(root[:]) != string(b.Header.MerkleRoot) {
		t.Fatal("root is not over the packet ids")
	}
	if err := VerifyBatch(b, relayA.Suite(), relayA.PublicKey(), l); err != nil {
		t.Fatalf("valid batch rejected: %v", err)
	}
	resign := func(b *Batch) {
		sig, _ := relayA.Sign(BatchHeaderSigningBytes(b.Header))
		b.RelaySignature = sig
	}
	cases := []struct {
		name   string
		mutate func(b *Batch)
		pub    []byte
		want   error
		field  string
	}{
		{"flipped signature", func(b *Batch) { b.RelaySignature[5] ^= 1 }, nil, ErrBadSignature, "relay_signature"},
		{"other relay's key", func(b *Batch) {}, relayB.PublicKey(), ErrBadSignature, "relay_signature"},
		{"malformed relay key", func(b *Batch) {}, []byte("short"), ErrBadCredential, "relay_signature"},
		{"tampered root, not re-signed", func(b *Batch) { b.Header.MerkleRoot[0] ^= 1 }, nil, ErrBadSignature, "relay_signature"},
		{"wrong root, signed", func(b *Batch) { b.Header.MerkleRoot[0] ^= 1; resign(b) }, nil, ErrMerkleRoot, "header.merkle_root"},
		{"tampered to_relay", func(b *Batch) { b.Header.ToRelay = "relay-c" }, nil, ErrBadSignature, "relay_signature"},
		{"tampered batch_seq", func(b *Batch) { b.Header.BatchSeq++ }, nil, ErrBadSignature, "relay_signature"},
		{"tampered count", func(b *Batch) { b.Header.PacketCount = 4 }, nil, ErrCountMismatch, "header.packet_count"},
		{"packet dropped", func(b *Batch) { b.Packets = b.Packets[:4] }, nil, ErrCountMismatch, "header.packet_count"},
		{"packet dropped, count fixed, signed", func(b *Batch) {
			b.Packets = b.Packets[:4]
			b.Header.PacketCount = 4
			resign(b)
		}, nil, ErrMerkleRoot, "header.merkle_root"},
		{"packet swapped", func(b *Batch) { b.Packets[4] = signedPacket(t, "pipe-9", 1, nil) }, nil, ErrMerkleRoot, "header.merkle_root"},
		{"packets reordered", func(b *Batch) { b.Packets[0], b.Packets[1] = b.Packets[1], b.Packets[0] }, nil, ErrMerkleRoot, "header.merkle_root"},
		{"packet sequence changed", func(b *Batch) { b.Packets[2].Sequence += 100 }, nil, ErrMerkleRoot, "header.merkle_root"},
		{"duplicate packet", func(b *Batch) { b.Packets[3] = clonePacket(b.Packets[0]) }, nil, ErrDuplicatePacket, "packets[3]"},
		{"invalid packet", func(b *Batch) { b.Packets[1].Operation = 0 }, nil, ErrBadOperation, "packets[1].operation"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := cloneBatch(b)
			c.mutate(b)
			pub := relayA.PublicKey()
			if c.pub != nil {
				pub = c.pub
			}
			checkRejection(t, VerifyBatch(b, relayA.Suite(), pub, l), c.want, c.field)
		})
	}
}

// A batch's root commits to packet ids; a packet's contents are the app's
// to sign. Tampering with a payload therefore passes VerifyBatch and is
// caught by VerifyPacket, which every receiver runs against the pipe key.
func TestTamperedPayloadCaughtByPacketSignature(t *testing.T) {
	b := sealedBatch(t, 3, 64)
	b.Packets[1].Payload[0] ^= 1
	if err := VerifyBatch(b, relayA.Suite(), relayA.PublicKey(), DefaultLimits()); err != nil {
		t.Fatalf("VerifyBatch: %v", err)
	}
	checkRejection(t, VerifyPacket(b.Packets[1], appKey.Suite(), appKey.PublicKey()), ErrBadSignature, "signature")
}

func TestSealBatchRejects(t *testing.T) {
	p := signedPacket(t, "pipe", 1, nil)
	dup := &Batch{Header: &BatchHeader{FromRelay: "a", ToRelay: "b", BatchSeq: 1}, Packets: []*Packet{p, clonePacket(p)}}
	checkRejection(t, SealBatch(dup, relayA), ErrDuplicatePacket, "packets[1]")
	checkRejection(t, SealBatch(&Batch{}, relayA), ErrMissingField, "header")
	checkRejection(t, SealReceiptBatch(&ReceiptBatch{}, relayA), ErrMissingField, "header")
	r := newReceipt(1)
	rdup := &ReceiptBatch{Header: &ReceiptBatchHeader{FromRelay: "b", ToRelay: "a", BatchSeq: 1}, Receipts: []*Receipt{r, r}}
	checkRejection(t, SealReceiptBatch(rdup, relayB), ErrDuplicatePacket, "receipts[1]")
}

func TestSealVerifyReceiptBatch(t *testing.T) {
	l := DefaultLimits()
	rb := sealedReceiptBatch(t, 6)
	if err := VerifyReceiptBatch(rb, relayB.Suite(), relayB.PublicKey(), l); err != nil {
		t.Fatalf("valid receipt batch rejected: %v", err)
	}
	// Each receipt can be proved against the signed root on its own.
	leaves := ReceiptLeaves(rb.Receipts)
	for i, r := range rb.Receipts {
		proof, err := MerkleProof(leaves, i)
		if err != nil {
			t.Fatal(err)
		}
		if !VerifyMerkleProof([32]byte(rb.Header.MerkleRoot), ReceiptLeaf(r), uint64(i), uint64(rb.Header.ReceiptCount), proof) {
			t.Fatalf("receipt %d does not prove against the root", i)
		}
	}
	resign := func(rb *ReceiptBatch) {
		sig, _ := relayB.Sign(ReceiptBatchHeaderSigningBytes(rb.Header))
		rb.RelaySignature = sig
	}
	cases := []struct {
		name   string
		mutate func(rb *ReceiptBatch)
		want   error
		field  string
	}{
		{"flipped signature", func(rb *ReceiptBatch) { rb.RelaySignature[0] ^= 1 }, ErrBadSignature, "relay_signature"},
		{"tampered root", func(rb *ReceiptBatch) { rb.Header.MerkleRoot[31] ^= 1 }, ErrBadSignature, "relay_signature"},
		{"wrong root, signed", func(rb *ReceiptBatch) { rb.Header.MerkleRoot[31] ^= 1; resign(rb) }, ErrMerkleRoot, "header.merkle_root"},
		{"tampered count", func(rb *ReceiptBatch) { rb.Header.ReceiptCount = 5 }, ErrCountMismatch, "header.receipt_count"},
		{"tampered acked seq", func(rb *ReceiptBatch) { rb.Header.BatchSeq = 8 }, ErrBadSignature, "relay_signature"},
		// Unlike packets in a batch, receipt contents are under the root.
		{"status flipped", func(rb *ReceiptBatch) { rb.Receipts[0].Status = StatusRejected }, ErrMerkleRoot, "header.merkle_root"},
		{"result changed", func(rb *ReceiptBatch) { rb.Receipts[0].ResultHash[0] ^= 1 }, ErrMerkleRoot, "header.merkle_root"},
		{"height changed", func(rb *ReceiptBatch) { rb.Receipts[3].DestHeight++ }, ErrMerkleRoot, "header.merkle_root"},
		{"reason changed", func(rb *ReceiptBatch) { rb.Receipts[1].Reason = "ok" }, ErrMerkleRoot, "header.merkle_root"},
		{"duplicate", func(rb *ReceiptBatch) { rb.Receipts[4].PacketId = rb.Receipts[0].PacketId }, ErrDuplicatePacket, "receipts[4]"},
		{"invalid receipt", func(rb *ReceiptBatch) { rb.Receipts[5].PacketId = nil }, ErrBadLength, "receipts[5].packet_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rb := cloneReceiptBatch(rb)
			c.mutate(rb)
			checkRejection(t, VerifyReceiptBatch(rb, relayB.Suite(), relayB.PublicKey(), l), c.want, c.field)
		})
	}
}
