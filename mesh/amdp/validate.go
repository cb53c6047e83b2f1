package amdp

import (
	"fmt"
	"unicode/utf8"

	"github.com/ccgpmesh/ccgp/crypto"
)

// The Validate methods check structure and bounds only: no hashing and no
// signatures. The Verify functions call them first, and the decoders call
// them on everything they return, so a caller holding a decoded message
// knows it is within the limits.

// Validate checks a signed packet against l.
func (p *Packet) Validate(l Limits) error {
	if p == nil {
		return invalid("packet", ErrMissingField, "")
	}
	l = l.WithDefaults()
	if err := checkString("pipe_id", p.PipeId, l.MaxPipeIDLen); err != nil {
		return err
	}
	if p.Sequence == 0 {
		return invalid("sequence", ErrBadSequence, "sequences start at 1")
	}
	switch p.Operation {
	case Operation_OPERATION_WRITE, Operation_OPERATION_READ:
	default:
		return invalidf("operation", ErrBadOperation, "%d", int32(p.Operation))
	}
	if len(p.Payload) > l.MaxPayload {
		return invalidf("payload", ErrPayloadTooLarge, "%d bytes, limit %d", len(p.Payload), l.MaxPayload)
	}
	if p.TimeoutHeight == 0 && p.TimeoutUnixMs == 0 {
		return invalid("timeout", ErrNoTimeout, "set timeout_height or timeout_unix_ms")
	}
	if p.Credential == nil {
		return invalid("credential", ErrMissingField, "")
	}
	if err := p.Credential.validate(); err != nil {
		return within("credential", err)
	}
	return checkSignature("signature", p.Signature, l)
}

func (c *Credential) validate() error {
	if len(c.Signer) != crypto.AddressLen {
		return invalidf("signer", ErrBadCredential, "%d bytes, want %d", len(c.Signer), crypto.AddressLen)
	}
	return checkString("suite", c.Suite, maxSuiteLen)
}

// Validate checks a sealed batch and every packet in it against l. It does
// not recompute the Merkle root or check signatures: VerifyBatch does.
func (b *Batch) Validate(l Limits) error {
	if b == nil {
		return invalid("batch", ErrMissingField, "")
	}
	l = l.WithDefaults()
	h := b.Header
	if h == nil {
		return invalid("header", ErrMissingField, "")
	}
	if err := checkRelays(h.FromRelay, h.ToRelay, h.BatchSeq, l); err != nil {
		return within("header", err)
	}
	if err := checkCount(len(b.Packets), h.PacketCount, l.MaxPacketsPerBatch, "packets", "header.packet_count", ErrTooManyPackets); err != nil {
		return err
	}
	if len(h.MerkleRoot) != 32 {
		return invalidf("header.merkle_root", ErrBadLength, "%d bytes, want 32", len(h.MerkleRoot))
	}
	if err := checkSignature("relay_signature", b.RelaySignature, l); err != nil {
		return err
	}
	for i, p := range b.Packets {
		if err := p.Validate(l); err != nil {
			return within(fmt.Sprintf("packets[%d]", i), err)
		}
	}
	return nil
}

// Validate checks one receipt against l.
func (r *Receipt) Validate(l Limits) error {
	if r == nil {
		return invalid("receipt", ErrMissingField, "")
	}
	l = l.WithDefaults()
	if len(r.PacketId) != 32 {
		return invalidf("packet_id", ErrBadLength, "%d bytes, want 32", len(r.PacketId))
	}
	delivered := false
	switch r.Status {
	case ReceiptStatus_RECEIPT_STATUS_DELIVERED:
		delivered = true
	case ReceiptStatus_RECEIPT_STATUS_REJECTED, ReceiptStatus_RECEIPT_STATUS_FAILED, ReceiptStatus_RECEIPT_STATUS_TIMED_OUT:
	default:
		return invalidf("status", ErrBadStatus, "%d", int32(r.Status))
	}
	switch {
	case len(r.DestTxHash) > l.MaxTxHashLen:
		return invalidf("dest_tx_hash", ErrFieldTooLong, "%d bytes, limit %d", len(r.DestTxHash), l.MaxTxHashLen)
	case delivered && len(r.DestTxHash) == 0:
		return invalid("dest_tx_hash", ErrMissingField, "required when delivered")
	}
	// A delivered packet always has a result to verify against the
	// destination chain; a rejected or failed one may not.
	if n := len(r.ResultHash); n != 32 && (delivered || n != 0) {
		return invalidf("result_hash", ErrBadLength, "%d bytes, want 32", n)
	}
	if len(r.Reason) > l.MaxReasonLen {
		return invalidf("reason", ErrFieldTooLong, "%d bytes, limit %d", len(r.Reason), l.MaxReasonLen)
	}
	if !utf8.ValidString(r.Reason) {
		return invalid("reason", ErrMalformed, "not valid UTF-8")
	}
	return nil
}

// Validate checks a sealed receipt batch and every receipt in it against l.
// It does not recompute the Merkle root or check the signature:
// VerifyReceiptBatch does.
func (rb *ReceiptBatch) Validate(l Limits) error {
	if rb == nil {
		return invalid("receipt_batch", ErrMissingField, "")
	}
	l = l.WithDefaults()
	h := rb.Header
	if h == nil {
		return invalid("header", ErrMissingField, "")
	}
	if err := checkRelays(h.FromRelay, h.ToRelay, h.BatchSeq, l); err != nil {
		return within("header", err)
	}
	if err := checkCount(len(rb.Receipts), h.ReceiptCount, l.MaxPacketsPerBatch, "receipts", "header.receipt_count", ErrTooManyReceipts); err != nil {
		return err
	}
	if len(h.MerkleRoot) != 32 {
		return invalidf("header.merkle_root", ErrBadLength, "%d bytes, want 32", len(h.MerkleRoot))
	}
	if err := checkSignature("relay_signature", rb.RelaySignature, l); err != nil {
		return err
	}
	for i, r := range rb.Receipts {
		if err := r.Validate(l); err != nil {
			return within(fmt.Sprintf("receipts[%d]", i), err)
		}
	}
	return nil
}

// checkString requires a non-empty UTF-8 string of at most max bytes.
func checkString(field, s string, max int) error {
	switch {
	case s == "":
		return invalid(field, ErrMissingField, "")
	case len(s) > max:
		return invalidf(field, ErrFieldTooLong, "%d bytes, limit %d", len(s), max)
	case !utf8.ValidString(s):
		// Protobuf refuses to encode such a string, so it could never
		// reach a peer; say so here rather than at Marshal.
		return invalid(field, ErrMalformed, "not valid UTF-8")
	}
	return nil
}

func checkSignature(field string, sig []byte, l Limits) error {
	switch {
	case len(sig) == 0:
		return invalid(field, ErrMissingField, "")
	case len(sig) > l.MaxSignatureLen:
		return invalidf(field, ErrFieldTooLong, "%d bytes, limit %d", len(sig), l.MaxSignatureLen)
	}
	return nil
}

func checkRelays(from, to string, seq uint64, l Limits) error {
	if err := checkString("from_relay", from, l.MaxRelayIDLen); err != nil {
		return err
	}
	if err := checkString("to_relay", to, l.MaxRelayIDLen); err != nil {
		return err
	}
	if seq == 0 {
		return invalid("batch_seq", ErrBadSequence, "batch sequences start at 1")
	}
	return nil
}

// checkCount checks the number of items carried against the limit and
// against the count in the header.
func checkCount(n int, claimed uint32, max int, field, countField string, tooMany error) error {
	switch {
	case n == 0:
		return invalid(field, ErrEmptyBatch, "")
	case n > max:
		return invalidf(field, tooMany, "%d, limit %d", n, max)
	case uint64(claimed) != uint64(n):
		return invalidf(countField, ErrCountMismatch, "header says %d, batch carries %d", claimed, n)
	}
	return nil
}
