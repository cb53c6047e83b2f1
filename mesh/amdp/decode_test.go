package amdp

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func TestPacketRoundTrip(t *testing.T) {
	p := signedPacket(t, "pipe-a", 42, payloadFor(42, 300))
	b, err := EncodePacket(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodePacket(b, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, p) {
		t.Fatal("packet changed in a round trip")
	}
	if err := VerifyPacket(got, appKey.Suite(), appKey.PublicKey()); err != nil {
		t.Fatalf("decoded packet no longer verifies: %v", err)
	}
	// EncodePacket appends.
	b2, _ := EncodePacket([]byte("x"), p)
	if !bytes.Equal(b2[1:], b) {
		t.Fatal("EncodePacket does not append")
	}
}

func TestBatchRoundTrip(t *testing.T) {
	b := sealedBatch(t, 33, 200)
	enc, err := EncodeBatch(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBatch(enc, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, b) {
		t.Fatal("batch changed in a round trip")
	}
	if err := VerifyBatch(got, relayA.Suite(), relayA.PublicKey(), DefaultLimits()); err != nil {
		t.Fatal(err)
	}
}

func TestReceiptBatchRoundTrip(t *testing.T) {
	rb := sealedReceiptBatch(t, 17)
	enc, err := EncodeReceiptBatch(nil, rb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeReceiptBatch(enc, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, rb) {
		t.Fatal("receipt batch changed in a round trip")
	}
	if err := VerifyReceiptBatch(got, relayB.Suite(), relayB.PublicKey(), DefaultLimits()); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeRejects(t *testing.T) {
	l := DefaultLimits()
	validPacket, _ := EncodePacket(nil, signedPacket(t, "pipe", 1, []byte("x")))
	validBatch, _ := EncodeBatch(nil, sealedBatch(t, 3, 10))
	validReceipts, _ := EncodeReceiptBatch(nil, sealedReceiptBatch(t, 3))
	unsigned, _ := EncodePacket(nil, newPacket("pipe", 1, nil))
	bigPayload, _ := EncodePacket(nil, signedPacket(t, "pipe", 1, make([]byte, l.MaxPayload+1)))
	// A string field holding invalid UTF-8, which proto3 refuses to parse.
	badUTF8 := protowire.AppendTag(nil, 1, protowire.BytesType)
	badUTF8 = protowire.AppendBytes(badUTF8, []byte{0xff})
	cases := []struct {
		name   string
		decode func([]byte, Limits) error
		in     []byte
		want   error
	}{
		{"packet: empty", decodePacketErr, nil, ErrMissingField},
		{"packet: garbage", decodePacketErr, []byte{0xff, 0xff, 0xff}, ErrMalformed},
		{"packet: truncated", decodePacketErr, validPacket[:len(validPacket)-3], ErrMalformed},
		{"packet: invalid UTF-8", decodePacketErr, badUTF8, ErrMalformed},
		{"packet: unsigned", decodePacketErr, unsigned, ErrMissingField},
		{"packet: payload over limit", decodePacketErr, bigPayload, ErrPayloadTooLarge},
		{"packet: input over any packet", decodePacketErr, make([]byte, l.maxPacketBytes()+1), ErrPacketTooLarge},
		{"batch: empty", decodeBatchErr, nil, ErrMissingField},
		{"batch: garbage", decodeBatchErr, []byte{0x0a, 0x05, 0x01}, ErrMalformed},
		{"batch: truncated", decodeBatchErr, validBatch[:len(validBatch)-1], ErrMalformed},
		{"batch: a packet is malformed", decodeBatchErr, append(bytes.Clone(validBatch), 0x12, 0x02, 0xff, 0xff), ErrMalformed},
		{"batch: over MaxBatchBytes", decodeBatchErr, make([]byte, l.MaxBatchBytes+1), ErrBatchTooLarge},
		{"batch: too many packets", func(b []byte, l Limits) error { return decodeBatchErr(b, Limits{MaxPacketsPerBatch: 2}) }, validBatch, ErrTooManyPackets},
		{"receipts: empty", decodeReceiptsErr, nil, ErrMissingField},
		{"receipts: garbage", decodeReceiptsErr, []byte{0x08}, ErrMalformed},
		{"receipts: over MaxBatchBytes", decodeReceiptsErr, make([]byte, l.MaxBatchBytes+1), ErrBatchTooLarge},
		{"receipts: too many", func(b []byte, l Limits) error { return decodeReceiptsErr(b, Limits{MaxPacketsPerBatch: 2}) }, validReceipts, ErrTooManyReceipts},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.decode(c.in, l)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if Reason(err) == "other" {
				t.Fatalf("rejection %v has no label", err)
			}
		})
	}
}

func decodePacketErr(b []byte, l Limits) error   { _, err := DecodePacket(b, l); return err }
func decodeBatchErr(b []byte, l Limits) error    { _, err := DecodeBatch(b, l); return err }
func decodeReceiptsErr(b []byte, l Limits) error { _, err := DecodeReceiptBatch(b, l); return err }

// Unknown fields are dropped: no signature covers them.
func TestDecodeDropsUnknownFields(t *testing.T) {
	p := signedPacket(t, "pipe", 1, []byte("x"))
	b, _ := EncodePacket(nil, p)
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("smuggled"))
	got, err := DecodePacket(b, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.ProtoReflect().GetUnknown()) != 0 {
		t.Fatal("unknown field kept")
	}
	if !proto.Equal(got, p) {
		t.Fatal("packet changed")
	}
}

// TestOversizedRejectedBeforeAllocation checks that the decoders refuse
// what they must refuse without allocating in proportion to the input.
func TestOversizedRejectedBeforeAllocation(t *testing.T) {
	l := DefaultLimits()
	huge := make([]byte, l.MaxBatchBytes+1)
	// 2 MiB of empty packets: a million messages if protobuf got to it.
	var manyPackets []byte
	for range 1 << 20 {
		manyPackets = append(manyPackets, 0x12, 0x00)
	}
	var manyReceipts = bytes.Clone(manyPackets)
	cases := []struct {
		name string
		f    func() error
		want error
	}{
		{"batch over MaxBatchBytes", func() error { _, err := DecodeBatch(huge, l); return err }, ErrBatchTooLarge},
		{"receipt batch over MaxBatchBytes", func() error { _, err := DecodeReceiptBatch(huge, l); return err }, ErrBatchTooLarge},
		{"packet over its bound", func() error { _, err := DecodePacket(huge, l); return err }, ErrPacketTooLarge},
		{"a million empty packets", func() error { _, err := DecodeBatch(manyPackets, l); return err }, ErrTooManyPackets},
		{"a million empty receipts", func() error { _, err := DecodeReceiptBatch(manyReceipts, l); return err }, ErrTooManyReceipts},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.f(); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if n := bytesAllocated(5, func() { _ = c.f() }); n > 4<<10 {
				t.Fatalf("rejection allocated %d bytes", n)
			}
		})
	}
}

// A packet with every field at its limit must fit under the bound that
// DecodePacket applies before parsing.
func TestPacketAtEveryLimitDecodes(t *testing.T) {
	for _, l := range []Limits{DefaultLimits(), {MaxPayload: 1 << 24, MaxSignatureLen: 1 << 16, MaxPipeIDLen: 1 << 12}} {
		l = l.WithDefaults()
		p := &Packet{
			PipeId:        strings.Repeat("p", l.MaxPipeIDLen),
			Sequence:      math.MaxUint64,
			Operation:     OpRead,
			Payload:       make([]byte, l.MaxPayload),
			TimeoutHeight: math.MaxUint64,
			TimeoutUnixMs: math.MaxUint64,
			Credential:    &Credential{Signer: make([]byte, 20), Suite: strings.Repeat("s", maxSuiteLen)},
			Signature:     make([]byte, l.MaxSignatureLen),
		}
		b, err := EncodePacket(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodePacket(b, l); err != nil {
			t.Fatalf("%d-byte packet at the limits (bound %d): %v", len(b), l.maxPacketBytes(), err)
		}
	}
}
