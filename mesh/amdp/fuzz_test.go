package amdp

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"
)

// The fuzz targets check that a decoder never panics, that every rejection
// carries a label (a peer's bytes can only be refused for a known reason),
// and that whatever it accepts survives a round trip unchanged.

func FuzzDecodePacket(f *testing.F) {
	// Small limits, so that seeds can sit at them and stay short.
	l := Limits{MaxPayload: 32, MaxPipeIDLen: 16}
	valid, _ := EncodePacket(nil, signedPacket(f, "pipe-a", 1, []byte("payload")))
	unsigned, _ := EncodePacket(nil, newPacket("pipe-a", 1, nil))
	maxPayload, _ := EncodePacket(nil, signedPacket(f, "pipe-a", 1, bytes.Repeat([]byte{'p'}, 32)))
	overPayload, _ := EncodePacket(nil, signedPacket(f, "pipe-a", 1, bytes.Repeat([]byte{'p'}, 33)))
	maxPipe, _ := EncodePacket(nil, signedPacket(f, strings.Repeat("a", 16), 1, nil))
	overPipe, _ := EncodePacket(nil, signedPacket(f, strings.Repeat("a", 17), 1, nil))
	for _, seed := range [][]byte{
		valid, unsigned, maxPayload, overPayload, maxPipe, overPipe,
		nil, {0}, {0x0a}, {0x0a, 0x80}, {0x3a, 0x00}, {0x10, 0x00},
		valid[:len(valid)/2], valid[:len(valid)-1], append(bytes.Clone(valid), valid...),
		{0x0a, 0x01, 0xff}, bytes.Repeat([]byte{0xff}, 12),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePacket(b, l)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("unlabelled rejection: %v", err)
			}
			return
		}
		again, err := EncodePacket(nil, p)
		if err != nil {
			t.Fatalf("accepted packet does not encode: %v", err)
		}
		p2, err := DecodePacket(again, l)
		if err != nil || !proto.Equal(p, p2) {
			t.Fatalf("round trip: %v", err)
		}
		_ = PacketSigningBytes(p)
		_ = VerifyPacket(p, appKey.Suite(), appKey.PublicKey())
	})
}

func FuzzDecodeBatch(f *testing.F) {
	l := Limits{MaxPacketsPerBatch: 8}
	valid, _ := EncodeBatch(nil, sealedBatch(f, 2, 0))
	one, _ := EncodeBatch(nil, sealedBatch(f, 1, 0))
	for _, seed := range [][]byte{
		// At the packet limit and over it, with empty packets: a seed
		// of 8 real packets would be long to minimize.
		valid, one, nil, {0x12, 0x00}, bytes.Repeat([]byte{0x12, 0x00}, 8), bytes.Repeat([]byte{0x12, 0x00}, 9),
		{0x0a, 0x00, 0x12, 0x00}, valid[:len(valid)-1], append(bytes.Clone(one), one...),
		{0x1a, 0x7f}, {0x0b, 0x0c}, {0x13, 0x14},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		bt, err := DecodeBatch(b, l)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("unlabelled rejection: %v", err)
			}
			return
		}
		if len(bt.Packets) > l.MaxPacketsPerBatch {
			t.Fatalf("accepted %d packets", len(bt.Packets))
		}
		again, err := EncodeBatch(nil, bt)
		if err != nil {
			t.Fatalf("accepted batch does not encode: %v", err)
		}
		bt2, err := DecodeBatch(again, l)
		if err != nil || !proto.Equal(bt, bt2) {
			t.Fatalf("round trip: %v", err)
		}
		if err := VerifyBatch(bt, relayA.Suite(), relayA.PublicKey(), l); Reason(err) == "other" {
			t.Fatalf("unlabelled verify error: %v", err)
		}
	})
}

func FuzzDecodeReceiptBatch(f *testing.F) {
	l := Limits{MaxPacketsPerBatch: 8}
	valid, _ := EncodeReceiptBatch(nil, sealedReceiptBatch(f, 2))
	one, _ := EncodeReceiptBatch(nil, sealedReceiptBatch(f, 1))
	for _, seed := range [][]byte{
		// At the packet limit and over it, with empty packets: a seed
		// of 8 real packets would be long to minimize.
		valid, one, nil, {0x12, 0x00}, bytes.Repeat([]byte{0x12, 0x00}, 8), bytes.Repeat([]byte{0x12, 0x00}, 9),
		valid[:len(valid)-1], append(bytes.Clone(one), one...), {0x12, 0x02, 0x10, 0x09},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rb, err := DecodeReceiptBatch(b, l)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("unlabelled rejection: %v", err)
			}
			return
		}
		again, err := EncodeReceiptBatch(nil, rb)
		if err != nil {
			t.Fatalf("accepted receipt batch does not encode: %v", err)
		}
		rb2, err := DecodeReceiptBatch(again, l)
		if err != nil || !proto.Equal(rb, rb2) {
			t.Fatalf("round trip: %v", err)
		}
		if err := VerifyReceiptBatch(rb, relayB.Suite(), relayB.PublicKey(), l); Reason(err) == "other" {
			t.Fatalf("unlabelled verify error: %v", err)
		}
	})
}

func FuzzDecodeFrame(f *testing.F) {
	// Small limits so that the fuzzer can reach them.
	l := Limits{MaxBatchBytes: 64 << 10, MaxDecompressed: 256 << 10, MaxPacketsPerBatch: 8}
	enc, dec := codecs(f, l)
	// The valid seeds are the smallest batches there are. The fuzzer
	// minimizes every input that finds new coverage, for up to
	// -fuzzminimizetime (60 s by default), and Go's minimizer tries every
	// sub-range of the input (quadratic in its length; golang/go#48820): with
	// seeds of 600 and 1500 bytes the one worker spent whole runs minimizing
	// a single mutant, so that FuzzDecodeFrame did about 2 execs/s.
	b := sealedBatch(f, 1, 0)
	rb := sealedReceiptBatch(f, 1)
	raw, _ := EncodeBatch(nil, b)
	rawR, _ := EncodeReceiptBatch(nil, rb)
	pb, _ := EncodeFrame(nil, b, nil)
	pr, _ := EncodeReceiptFrame(nil, rb, nil)
	// Compressed without a checksum, and as a stored (raw) zstd block, so
	// that a mutation of the body still gets through zstd to the batch
	// decoder; with the checksum nearly every mutant stops at zstd.
	noCRC, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false))
	if err != nil {
		f.Fatal(err)
	}
	defer noCRC.Close()
	zb := frameOf(FrameBatch, flagZstd, noCRC.EncodeAll(raw, nil))
	zr := frameOf(FrameReceiptBatch, flagZstd, noCRC.EncodeAll(rawR, nil))
	stored := frameOf(FrameReceiptBatch, flagZstd, zstdFrame(17, zstdBlock(true, zstdBlockRaw, len(rawR), rawR)))
	withCRC := frameOf(FrameBatch, flagZstd, enc.EncodeAll(raw, nil))
	var rle []byte
	for i := range 4 {
		rle = append(rle, zstdBlock(i == 3, zstdBlockRLE, zstdMaxBlock, []byte{0})...)
	}
	for _, seed := range [][]byte{
		// valid: plain, compressed, stored, with a checksum, two frames
		pb, pr, zb, zr, stored, withCRC, append(bytes.Clone(pr), pb...),
		// empty and truncated
		nil, {1}, {1, 0}, {1, 1, 0}, {2, 0, 0x80}, pb[:len(pb)-1], zb[:len(zb)-1], pb[:3],
		// unknown kind and flags, empty body
		{3, 0, 1, 0}, {1, 2, 1, 0}, {1, 0, 0},
		// sizes at and over the limits: body length, window, content size,
		// blocks that may hold more than MaxDecompressed
		binary.AppendUvarint([]byte{1, 0}, 64<<10), binary.AppendUvarint([]byte{1, 0}, 1<<40),
		frameOf(FrameBatch, flagZstd, zstdFrame(30, zstdBlock(true, zstdBlockRaw, 1, []byte{0}))),
		frameOf(FrameBatch, flagZstd, zstdFrame(17, rle)),
		frameOf(FrameReceiptBatch, flagZstd, noCRC.EncodeAll(make([]byte, 300<<10), nil)),
		// valid zstd holding a batch that is not valid
		frameOf(FrameBatch, flagZstd, zstdFrame(17, zstdBlock(true, zstdBlockRaw, 2, []byte{0x12, 0x00}))),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		fr, n, err := DecodeFrame(src, dec, l)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("unlabelled rejection: %v", err)
			}
			return
		}
		if n <= 0 || n > len(src) {
			t.Fatalf("consumed %d of %d bytes", n, len(src))
		}
		var again []byte
		switch fr.Kind {
		case FrameBatch:
			again, err = EncodeFrame(nil, fr.Batch, enc)
		case FrameReceiptBatch:
			again, err = EncodeReceiptFrame(nil, fr.ReceiptBatch, enc)
		default:
			t.Fatalf("accepted kind %v", fr.Kind)
		}
		if err != nil {
			t.Fatalf("accepted frame does not encode: %v", err)
		}
		fr2, _, err := DecodeFrame(again, dec, l)
		if err != nil || fr2.Kind != fr.Kind || !proto.Equal(fr.Batch, fr2.Batch) || !proto.Equal(fr.ReceiptBatch, fr2.ReceiptBatch) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
