package amdp

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Field numbers of the repeated fields whose count the decoders check
// before letting protobuf allocate one message per occurrence (see
// amdp.proto).
const (
	batchPacketsField         protowire.Number = 2
	receiptBatchReceiptsField protowire.Number = 2
)

// EncodePacket appends p's protobuf encoding to dst.
func EncodePacket(dst []byte, p *Packet) ([]byte, error) { return encode(dst, p, "packet") }

// EncodeBatch appends b's protobuf encoding to dst.
func EncodeBatch(dst []byte, b *Batch) ([]byte, error) { return encode(dst, b, "batch") }

// EncodeReceiptBatch appends rb's protobuf encoding to dst.
func EncodeReceiptBatch(dst []byte, rb *ReceiptBatch) ([]byte, error) {
	return encode(dst, rb, "receipt batch")
}

func encode(dst []byte, m proto.Message, what string) ([]byte, error) {
	out, err := proto.MarshalOptions{}.MarshalAppend(dst, m)
	if err != nil {
		// Only an invalid UTF-8 string gets here, which Validate reports.
		return dst, fmt.Errorf("amdp: encode %s: %w", what, err)
	}
	return out, nil
}

// unmarshal parses b into m. Unknown fields are dropped: they are not
// covered by any signature, so forwarding them would relay unsigned bytes.
func unmarshal(b []byte, m proto.Message, what string) error {
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, m); err != nil {
		return fmt.Errorf("amdp: decode %s: %w: %w", what, ErrMalformed, err)
	}
	return nil
}

// DecodePacket parses and validates one packet. Input longer than any
// packet valid under l can be is refused before it is parsed.
func DecodePacket(b []byte, l Limits) (*Packet, error) {
	l = l.WithDefaults()
	if max := l.maxPacketBytes(); len(b) > max {
		return nil, invalidf("packet", ErrPacketTooLarge, "%d bytes, limit %d", len(b), max)
	}
	p := new(Packet)
	if err := unmarshal(b, p, "packet"); err != nil {
		return nil, err
	}
	if err := p.Validate(l); err != nil {
		return nil, err
	}
	return p, nil
}

// DecodeBatch parses and validates a batch. Input over l.MaxBatchBytes,
// and input carrying more than l.MaxPacketsPerBatch packets, are refused
// before anything is allocated for them. It does not check signatures or
// the Merkle root: VerifyBatch does.
func DecodeBatch(b []byte, l Limits) (*Batch, error) {
	l = l.WithDefaults()
	return decodeBatch(b, l, l.MaxBatchBytes)
}

func decodeBatch(b []byte, l Limits, maxBytes int) (*Batch, error) {
	if len(b) > maxBytes {
		return nil, invalidf("batch", ErrBatchTooLarge, "%d bytes, limit %d", len(b), maxBytes)
	}
	if err := checkRepeated(b, batchPacketsField, l.MaxPacketsPerBatch, "batch", "packets", ErrTooManyPackets); err != nil {
		return nil, err
	}
	bt := new(Batch)
	if err := unmarshal(b, bt, "batch"); err != nil {
		return nil, err
	}
	if err := bt.Validate(l); err != nil {
		return nil, err
	}
	return bt, nil
}

// DecodeReceiptBatch is DecodeBatch for receipt batches.
func DecodeReceiptBatch(b []byte, l Limits) (*ReceiptBatch, error) {
	l = l.WithDefaults()
	return decodeReceiptBatch(b, l, l.MaxBatchBytes)
}

func decodeReceiptBatch(b []byte, l Limits, maxBytes int) (*ReceiptBatch, error) {
	if len(b) > maxBytes {
		return nil, invalidf("receipt_batch", ErrBatchTooLarge, "%d bytes, limit %d", len(b), maxBytes)
	}
	if err := checkRepeated(b, receiptBatchReceiptsField, l.MaxPacketsPerBatch, "receipt batch", "receipts", ErrTooManyReceipts); err != nil {
		return nil, err
	}
	rb := new(ReceiptBatch)
	if err := unmarshal(b, rb, "receipt batch"); err != nil {
		return nil, err
	}
	if err := rb.Validate(l); err != nil {
		return nil, err
	}
	return rb, nil
}

// checkRepeated walks the top level of a protobuf message without
// allocating and refuses it if field occurs more than max times. Without
// this, a 16 MiB batch of empty packets (two bytes each) would make
// protobuf allocate eight million messages before Validate could count
// them.
func checkRepeated(b []byte, field protowire.Number, max int, what, name string, tooMany error) error {
	n := 0
	for len(b) > 0 {
		num, typ, tl := protowire.ConsumeTag(b)
		if tl < 0 {
			return fmt.Errorf("amdp: decode %s: %w: %w", what, ErrMalformed, protowire.ParseError(tl))
		}
		vl := protowire.ConsumeFieldValue(num, typ, b[tl:])
		if vl < 0 {
			return fmt.Errorf("amdp: decode %s: %w: %w", what, ErrMalformed, protowire.ParseError(vl))
		}
		if num == field {
			if n++; n > max {
				return invalidf(name, tooMany, "more than %d", max)
			}
		}
		b = b[tl+vl:]
	}
	return nil
}
