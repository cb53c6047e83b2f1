package amdp

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// Domain-separation tags, one per kind of canonical bytes. Each ends in a
// NUL so that no tag is a prefix of another, and bytes built for one kind
// can never be taken for another's.
const (
	tagPacket             = "ccgp/amdp/v1/packet\x00"
	tagPacketID           = "ccgp/amdp/v1/packet-id\x00"
	tagBatchHeader        = "ccgp/amdp/v1/batch-header\x00"
	tagReceipt            = "ccgp/amdp/v1/receipt\x00"
	tagReceiptBatchHeader = "ccgp/amdp/v1/receipt-batch-header\x00"
)

// The canonical encoding, documented in doc.go: integers are fixed-width
// big-endian, enums are their number as a u32, and every string or byte
// field is a u32 length followed by its bytes. Nothing is optional and
// nothing is omitted, so equal messages give equal bytes in every
// implementation, which protobuf does not promise.

func appendU32(dst []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(dst, v) }
func appendU64(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

func appendBytes(dst, b []byte) []byte {
	dst = appendU32(dst, uint32(len(b)))
	return append(dst, b...)
}

func appendString(dst []byte, s string) []byte {
	dst = appendU32(dst, uint32(len(s)))
	return append(dst, s...)
}

// AppendPacketSigningBytes appends the bytes a packet's signature covers:
//
//	tag "ccgp/amdp/v1/packet\x00" || str(pipe_id) || u64(sequence) ||
//	u32(operation) || bytes(payload) || u64(timeout_height) ||
//	u64(timeout_unix_ms) || bytes(credential.signer) || str(credential.suite)
//
// The signature field itself is not covered. A nil credential encodes as
// empty signer and suite. dst grows at most once.
func AppendPacketSigningBytes(dst []byte, p *Packet) []byte {
	c := p.GetCredential()
	n := len(tagPacket) + 4 + len(p.GetPipeId()) + 8 + 4 + 4 + len(p.GetPayload()) +
		8 + 8 + 4 + len(c.GetSigner()) + 4 + len(c.GetSuite())
	dst = slices.Grow(dst, n)
	dst = append(dst, tagPacket...)
	dst = appendString(dst, p.GetPipeId())
	dst = appendU64(dst, p.GetSequence())
	dst = appendU32(dst, uint32(p.GetOperation()))
	dst = appendBytes(dst, p.GetPayload())
	dst = appendU64(dst, p.GetTimeoutHeight())
	dst = appendU64(dst, p.GetTimeoutUnixMs())
	dst = appendBytes(dst, c.GetSigner())
	dst = appendString(dst, c.GetSuite())
	return dst
}

// PacketSigningBytes returns AppendPacketSigningBytes(nil, p).
func PacketSigningBytes(p *Packet) []byte { return AppendPacketSigningBytes(nil, p) }

// AppendBatchHeaderSigningBytes appends the bytes a batch's relay signature
// covers:
//
//	tag "ccgp/amdp/v1/batch-header\x00" || str(from_relay) || str(to_relay) ||
//	u64(batch_seq) || u32(packet_count) || bytes(merkle_root) ||
//	u64(created_unix_ms)
func AppendBatchHeaderSigningBytes(dst []byte, h *BatchHeader) []byte {
	n := len(tagBatchHeader) + 4 + len(h.GetFromRelay()) + 4 + len(h.GetToRelay()) +
		8 + 4 + 4 + len(h.GetMerkleRoot()) + 8
	dst = slices.Grow(dst, n)
	dst = append(dst, tagBatchHeader...)
	dst = appendString(dst, h.GetFromRelay())
	dst = appendString(dst, h.GetToRelay())
	dst = appendU64(dst, h.GetBatchSeq())
	dst = appendU32(dst, h.GetPacketCount())
	dst = appendBytes(dst, h.GetMerkleRoot())
	dst = appendU64(dst, h.GetCreatedUnixMs())
	return dst
}

// BatchHeaderSigningBytes returns AppendBatchHeaderSigningBytes(nil, h).
func BatchHeaderSigningBytes(h *BatchHeader) []byte { return AppendBatchHeaderSigningBytes(nil, h) }

// AppendReceiptBytes appends a receipt's canonical bytes, whose SHA-256 is
// the receipt's Merkle leaf (ReceiptLeaf):
//
//	tag "ccgp/amdp/v1/receipt\x00" || bytes(packet_id) || u32(status) ||
//	bytes(dest_tx_hash) || u64(dest_height) || bytes(result_hash) || str(reason)
func AppendReceiptBytes(dst []byte, r *Receipt) []byte {
	n := len(tagReceipt) + 4 + len(r.GetPacketId()) + 4 + 4 + len(r.GetDestTxHash()) +
		8 + 4 + len(r.GetResultHash()) + 4 + len(r.GetReason())
	dst = slices.Grow(dst, n)
	dst = append(dst, tagReceipt...)
	dst = appendBytes(dst, r.GetPacketId())
	dst = appendU32(dst, uint32(r.GetStatus()))
	dst = appendBytes(dst, r.GetDestTxHash())
	dst = appendU64(dst, r.GetDestHeight())
	dst = appendBytes(dst, r.GetResultHash())
	dst = appendString(dst, r.GetReason())
	return dst
}

// AppendReceiptBatchHeaderSigningBytes appends the bytes a receipt batch's
// relay signature covers:
//
//	tag "ccgp/amdp/v1/receipt-batch-header\x00" || str(from_relay) ||
//	str(to_relay) || u64(batch_seq) || u32(receipt_count) || bytes(merkle_root)
func AppendReceiptBatchHeaderSigningBytes(dst []byte, h *ReceiptBatchHeader) []byte {
	n := len(tagReceiptBatchHeader) + 4 + len(h.GetFromRelay()) + 4 + len(h.GetToRelay()) +
		8 + 4 + 4 + len(h.GetMerkleRoot())
	dst = slices.Grow(dst, n)
	dst = append(dst, tagReceiptBatchHeader...)
	dst = appendString(dst, h.GetFromRelay())
	dst = appendString(dst, h.GetToRelay())
	dst = appendU64(dst, h.GetBatchSeq())
	dst = appendU32(dst, h.GetReceiptCount())
	dst = appendBytes(dst, h.GetMerkleRoot())
	return dst
}

// ReceiptBatchHeaderSigningBytes returns
// AppendReceiptBatchHeaderSigningBytes(nil, h).
func ReceiptBatchHeaderSigningBytes(h *ReceiptBatchHeader) []byte {
	return AppendReceiptBatchHeaderSigningBytes(nil, h)
}

// PacketID identifies a packet across the platform:
//
//	SHA-256(tag "ccgp/amdp/v1/packet-id\x00" || str(pipe_id) || u64(seq))
//
// It depends only on the pipe and sequence, so a retried packet keeps its
// id and the destination's delivery record makes the retry idempotent.
func PacketID(pipeID string, seq uint64) [32]byte {
	// Sized for pipe ids up to the default limit so that the common case
	// hashes from the stack.
	var buf [len(tagPacketID) + 4 + 128 + 8]byte
	b := append(buf[:0], tagPacketID...)
	b = appendString(b, pipeID)
	b = appendU64(b, seq)
	return sha256.Sum256(b)
}

// ID returns PacketID(p.PipeId, p.Sequence).
func (p *Packet) ID() [32]byte { return PacketID(p.GetPipeId(), p.GetSequence()) }

// ReceiptLeaf is a receipt's Merkle leaf: SHA-256 of its canonical bytes.
func ReceiptLeaf(r *Receipt) [32]byte {
	var buf [512]byte
	return sha256.Sum256(AppendReceiptBytes(buf[:0], r))
}
