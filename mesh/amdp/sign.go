package amdp

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/ccgpmesh/ccgp/crypto"
)

// Signer signs with one private key. crypto.Signer satisfies it; an HSM or
// KMS-backed key can too. Sign must be safe for concurrent use.
type Signer interface {
	Suite() crypto.Suite
	PublicKey() []byte
	Sign(msg []byte) ([]byte, error)
}

// SignPacket fills p's credential from s and signs the packet. It does not
// validate p: call Validate after, as a sender would before sending.
func SignPacket(p *Packet, s Signer) error {
	addr := crypto.SignerAddress(s)
	p.Credential = &Credential{Signer: addr[:], Suite: string(s.Suite())}
	sig, err := s.Sign(PacketSigningBytes(p))
	if err != nil {
		return fmt.Errorf("amdp: sign packet %s/%d: %w", p.PipeId, p.Sequence, err)
	}
	p.Signature = sig
	return nil
}

// VerifyPacket checks that p is signed by pub under suite, the key that the
// pipe records for the packet's source account. The credential must name
// that very key (same suite, same address), so a packet signed by any
// other key, however valid its signature, is ErrBadCredential. VerifyPacket
// does not call Validate: the decoders and Batch.Validate already have.
func VerifyPacket(p *Packet, suite crypto.Suite, pub []byte) error {
	c := p.GetCredential()
	if c == nil {
		return invalid("credential", ErrMissingField, "")
	}
	if c.Suite != string(suite) {
		return invalidf("credential.suite", ErrBadCredential, "packet signed under %q, pipe key is %q", c.Suite, suite)
	}
	if addr := crypto.AddressOf(suite, pub); !bytes.Equal(c.Signer, addr[:]) {
		return invalidf("credential.signer", ErrBadCredential, "%x is not the pipe key's address %s", c.Signer, addr)
	}
	return verify("signature", suite, pub, PacketSigningBytes(p), p.Signature)
}

// SealBatch completes b's header (packet count and the Merkle root over the
// packet ids) and signs it. The caller sets from, to, batch_seq and
// created_unix_ms first. Two packets with one id are ErrDuplicatePacket.
func SealBatch(b *Batch, s Signer) error {
	if b.GetHeader() == nil {
		return invalid("header", ErrMissingField, "")
	}
	if uint64(len(b.Packets)) > math.MaxUint32 {
		return invalidf("packets", ErrTooManyPackets, "%d", len(b.Packets))
	}
	ids := PacketIDs(b.Packets)
	if err := checkUnique(ids, "packets"); err != nil {
		return err
	}
	root := rootInPlace(ids)
	b.Header.PacketCount = uint32(len(b.Packets))
	b.Header.MerkleRoot = root[:]
	sig, err := s.Sign(BatchHeaderSigningBytes(b.Header))
	if err != nil {
		return fmt.Errorf("amdp: sign batch %s->%s #%d: %w", b.Header.FromRelay, b.Header.ToRelay, b.Header.BatchSeq, err)
	}
	b.RelaySignature = sig
	return nil
}

// VerifyBatch checks b against l, its relay signature against pub under
// suite (the sending relay's registered key), and its Merkle root against
// its packets, in that order: the cheap structural checks first, and the
// hashing only for a header the relay has signed.
//
// The root commits to packet ids, not contents: each packet's contents are
// authenticated by its own signature, which the receiver checks with
// VerifyPacket against the pipe's key.
func VerifyBatch(b *Batch, suite crypto.Suite, pub []byte, l Limits) error {
	if err := b.Validate(l); err != nil {
		return err
	}
	if err := verify("relay_signature", suite, pub, BatchHeaderSigningBytes(b.Header), b.RelaySignature); err != nil {
		return err
	}
	ids := PacketIDs(b.Packets)
	if err := checkUnique(ids, "packets"); err != nil {
		return err
	}
	if root := rootInPlace(ids); !bytes.Equal(root[:], b.Header.MerkleRoot) {
		return invalidf("header.merkle_root", ErrMerkleRoot, "header %x, packets give %x", b.Header.MerkleRoot, root)
	}
	return nil
}

// SealReceiptBatch completes rb's header (receipt count and the Merkle root
// over ReceiptLeaf of each receipt) and signs it. The caller sets from, to
// and batch_seq (the acknowledged batch's) first.
func SealReceiptBatch(rb *ReceiptBatch, s Signer) error {
	if rb.GetHeader() == nil {
		return invalid("header", ErrMissingField, "")
	}
	if uint64(len(rb.Receipts)) > math.MaxUint32 {
		return invalidf("receipts", ErrTooManyReceipts, "%d", len(rb.Receipts))
	}
	if err := uniqueReceipts(rb.Receipts); err != nil {
		return err
	}
	root := rootInPlace(ReceiptLeaves(rb.Receipts))
	rb.Header.ReceiptCount = uint32(len(rb.Receipts))
	rb.Header.MerkleRoot = root[:]
	sig, err := s.Sign(ReceiptBatchHeaderSigningBytes(rb.Header))
	if err != nil {
		return fmt.Errorf("amdp: sign receipt batch %s->%s #%d: %w", rb.Header.FromRelay, rb.Header.ToRelay, rb.Header.BatchSeq, err)
	}
	rb.RelaySignature = sig
	return nil
}

// VerifyReceiptBatch is VerifyBatch for receipt batches. Unlike a batch's,
// the root commits to each receipt's full contents, so a valid receipt
// batch authenticates every receipt in it.
func VerifyReceiptBatch(rb *ReceiptBatch, suite crypto.Suite, pub []byte, l Limits) error {
	if err := rb.Validate(l); err != nil {
		return err
	}
	if err := verify("relay_signature", suite, pub, ReceiptBatchHeaderSigningBytes(rb.Header), rb.RelaySignature); err != nil {
		return err
	}
	if err := uniqueReceipts(rb.Receipts); err != nil {
		return err
	}
	if root := rootInPlace(ReceiptLeaves(rb.Receipts)); !bytes.Equal(root[:], rb.Header.MerkleRoot) {
		return invalidf("header.merkle_root", ErrMerkleRoot, "header %x, receipts give %x", rb.Header.MerkleRoot, root)
	}
	return nil
}

// PacketIDs returns the id of each packet: the leaves of a batch's tree.
func PacketIDs(packets []*Packet) [][32]byte {
	ids := make([][32]byte, len(packets))
	for i, p := range packets {
		ids[i] = p.ID()
	}
	return ids
}

// ReceiptLeaves returns ReceiptLeaf of each receipt: the leaves of a
// receipt batch's tree.
func ReceiptLeaves(receipts []*Receipt) [][32]byte {
	leaves := make([][32]byte, len(receipts))
	for i, r := range receipts {
		leaves[i] = ReceiptLeaf(r)
	}
	return leaves
}

// rootInPlace is MerkleRoot that uses leaves as its scratch space, saving
// the copy when the caller has no further use for them.
func rootInPlace(leaves [][32]byte) [32]byte {
	if len(leaves) < 2 {
		return MerkleRoot(leaves)
	}
	for i := range leaves {
		leaves[i] = leafHash(leaves[i])
	}
	return reduce(leaves)
}

func checkUnique(ids [][32]byte, field string) error {
	seen := make(map[[32]byte]struct{}, len(ids))
	for i, id := range ids {
		if _, dup := seen[id]; dup {
			j := slices.Index(ids, id) // the first, found only on failure
			return invalidf(fmt.Sprintf("%s[%d]", field, i), ErrDuplicatePacket, "same id as %s[%d]: %x", field, j, id)
		}
		seen[id] = struct{}{}
	}
	return nil
}

func uniqueReceipts(receipts []*Receipt) error {
	ids := make([][32]byte, len(receipts))
	for i, r := range receipts {
		copy(ids[i][:], r.GetPacketId())
	}
	return checkUnique(ids, "receipts")
}

// verify checks one signature and turns package crypto's errors into this
// package's: a signature that does not verify is ErrBadSignature; a key or
// suite that cannot be used at all is ErrBadCredential.
func verify(field string, suite crypto.Suite, pub, msg, sig []byte) error {
	err := crypto.Verify(suite, pub, msg, sig)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, crypto.ErrBadSignature):
		return invalid(field, ErrBadSignature, err.Error())
	default:
		return invalid(field, ErrBadCredential, err.Error())
	}
}
