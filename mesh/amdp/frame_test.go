package amdp

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"
)

func codecs(t testing.TB, l Limits) (*zstd.Encoder, *zstd.Decoder) {
	t.Helper()
	enc, err := NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := NewDecoder(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enc.Close(); dec.Close() })
	return enc, dec
}

// frameOf wraps body in a frame header by hand.
func frameOf(kind FrameKind, flags byte, body []byte) []byte {
	f := binary.AppendUvarint([]byte{byte(kind), flags}, uint64(len(body)))
	return append(f, body...)
}

func TestFrameRoundTrip(t *testing.T) {
	l := DefaultLimits()
	enc, dec := codecs(t, l)
	b := sealedBatch(t, 64, 300)
	rb := sealedReceiptBatch(t, 64)
	random := sealedBatch(t, 4, 10)
	for _, p := range random.Packets {
		p.Payload = make([]byte, 4000)
		rand.Read(p.Payload)
	}
	cases := []struct {
		name           string
		encode         func(dst []byte) ([]byte, error)
		want           proto.Message
		wantCompressed bool
	}{
		{"batch zstd", func(dst []byte) ([]byte, error) { return EncodeFrame(dst, b, enc) }, b, true},
		{"batch plain", func(dst []byte) ([]byte, error) { return EncodeFrame(dst, b, nil) }, b, false},
		{"receipts zstd", func(dst []byte) ([]byte, error) { return EncodeReceiptFrame(dst, rb, enc) }, rb, true},
		{"receipts plain", func(dst []byte) ([]byte, error) { return EncodeReceiptFrame(dst, rb, nil) }, rb, false},
		{"incompressible goes plain", func(dst []byte) ([]byte, error) { return EncodeFrame(dst, random, enc) }, random, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prefix := []byte("earlier frames")
			out, err := c.encode(bytes.Clone(prefix))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(out, prefix) {
				t.Fatal("encoder clobbered dst")
			}
			frame := out[len(prefix):]
			h, _, err := ParseFrameHeader(frame, l)
			if err != nil {
				t.Fatal(err)
			}
			if h.Compressed != c.wantCompressed {
				t.Fatalf("compressed = %v, want %v", h.Compressed, c.wantCompressed)
			}
			// Two frames back to back, then a partial third.
			stream := append(append(bytes.Clone(frame), frame...), frame[:5]...)
			for i := range 2 {
				f, n, err := DecodeFrame(stream, dec, l)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if n != len(frame) {
					t.Fatalf("frame %d: consumed %d of %d", i, n, len(frame))
				}
				var got proto.Message = f.Batch
				if f.Kind == FrameReceiptBatch {
					got = f.ReceiptBatch
				}
				if !proto.Equal(got, c.want) {
					t.Fatalf("frame %d: message changed", i)
				}
				stream = stream[n:]
			}
			if _, _, err := DecodeFrame(stream, dec, l); !errors.Is(err, ErrShortFrame) {
				t.Fatalf("partial frame: %v", err)
			}
		})
	}
}

func TestFrameTruncationsAreShort(t *testing.T) {
	enc, dec := codecs(t, DefaultLimits())
	frame, err := EncodeFrame(nil, sealedBatch(t, 3, 100), enc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(frame) {
		if _, _, err := DecodeFrame(frame[:i], dec, DefaultLimits()); !errors.Is(err, ErrShortFrame) {
			t.Fatalf("prefix of %d bytes: %v", i, err)
		}
	}
}

func TestParseFrameHeaderRejects(t *testing.T) {
	l := Limits{MaxBatchBytes: 1000}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShortFrame},
		{"kind only", []byte{1}, ErrShortFrame},
		{"no length", []byte{1, 0}, ErrShortFrame},
		{"length cut", []byte{1, 0, 0x80}, ErrShortFrame},
		{"kind zero", []byte{0, 0, 1, 0}, ErrBadFrame},
		{"kind unknown", []byte{3, 0, 1, 0}, ErrBadFrame},
		{"reserved flag", []byte{1, 2, 1, 0}, ErrBadFrame},
		{"zero length", []byte{1, 0, 0}, ErrBadFrame},
		{"length overflow", append([]byte{1, 0}, bytes.Repeat([]byte{0xff}, 11)...), ErrBadFrame},
		{"length over limit", binary.AppendUvarint([]byte{2, 1}, 1001), ErrBatchTooLarge},
		{"huge length", binary.AppendUvarint([]byte{1, 0}, 1<<62), ErrBatchTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ParseFrameHeader(c.in, l)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if _, _, err := DecodeFrame(c.in, nil, l); !errors.Is(err, c.want) {
				t.Fatalf("DecodeFrame: got %v, want %v", err, c.want)
			}
		})
	}
	h, n, err := ParseFrameHeader(binary.AppendUvarint([]byte{2, 1}, 1000), l)
	if err != nil || n != 4 || h != (FrameHeader{Kind: FrameReceiptBatch, Compressed: true, Len: 1000}) {
		t.Fatalf("limit-sized header: %+v %d %v", h, n, err)
	}
}

func TestDecodeFrameBodyRejects(t *testing.T) {
	l := DefaultLimits()
	_, dec := codecs(t, l)
	body, _ := EncodeBatch(nil, sealedBatch(t, 2, 10))
	h := FrameHeader{Kind: FrameBatch, Len: len(body) + 1}
	if _, err := DecodeFrameBody(h, body, dec, l); !errors.Is(err, ErrBadFrame) {
		t.Errorf("length mismatch: %v", err)
	}
	h = FrameHeader{Kind: 7, Len: len(body)}
	if _, err := DecodeFrameBody(h, body, dec, l); !errors.Is(err, ErrBadFrame) {
		t.Errorf("bad kind: %v", err)
	}
	// A batch body sent as a receipt batch does not validate.
	if _, _, err := DecodeFrame(frameOf(FrameReceiptBatch, 0, body), dec, l); err == nil {
		t.Error("batch accepted as receipt batch")
	}
	// Compressed, but the receiver has no decoder: a configuration error,
	// not a peer's fault, so it carries no rejection label.
	enc, _ := NewEncoder()
	defer enc.Close()
	frame, _ := EncodeFrame(nil, sealedBatch(t, 8, 200), enc)
	if _, _, err := DecodeFrame(frame, nil, l); err == nil || Reason(err) != "other" {
		t.Errorf("no decoder: %v", err)
	}
}

// zstdFrame builds a zstd frame by hand: no checksum, no content size, the
// given window log, then blocks.
func zstdFrame(windowLog byte, blocks ...[]byte) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (windowLog - 10) << 3}
	for _, b := range blocks {
		f = append(f, b...)
	}
	return f
}

func zstdBlock(last bool, typ uint32, size int, content []byte) []byte {
	bh := typ<<1 | uint32(size)<<3
	if last {
		bh |= 1
	}
	return append([]byte{byte(bh), byte(bh >> 8), byte(bh >> 16)}, content...)
}

func TestDecompressionBounds(t *testing.T) {
	l := DefaultLimits()
	enc, dec := codecs(t, l)
	// A decoder with the library's defaults (64 GiB budget): the bounds
	// must hold even when the caller's decoder would not enforce them.
	lax, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lax.Close()

	zeros := enc.EncodeAll(make([]byte, 40<<20), nil)
	// 300 RLE blocks of 128 KiB each: 37.5 MiB from 1.2 KiB, with no
	// content size in the header to refuse it by.
	var rle []byte
	for i := range 300 {
		rle = append(rle, zstdBlock(i == 299, zstdBlockRLE, zstdMaxBlock, []byte{0})...)
	}
	rleBomb := zstdFrame(17, rle)

	// A legitimate 1 MiB frame whose content size field we then falsify.
	big := sealedBatch(t, 16, 64<<10-1000)
	raw, _ := EncodeBatch(nil, big)
	legit := enc.EncodeAll(raw, nil)
	var zh zstd.Header
	if err := zh.Decode(legit); err != nil || !zh.HasFCS || zh.FrameContentSize != uint64(len(raw)) || legit[4]>>6 != 2 {
		t.Fatalf("unexpected zstd header %+v: %v", zh, err)
	}
	fcsAt := zh.HeaderSize - 4
	withFCS := func(fcs uint32) []byte {
		b := bytes.Clone(legit)
		binary.LittleEndian.PutUint32(b[fcsAt:], fcs)
		return b
	}
	// A batch small enough to travel in one raw block, framed without a
	// content size: valid, and bounded by its block headers alone.
	small, _ := EncodeBatch(nil, sealedBatch(t, 2, 50))
	noFCS := zstdFrame(17, zstdBlock(true, zstdBlockRaw, len(small), small))

	cases := []struct {
		name string
		body []byte
		l    Limits
		want error // nil: decodes
	}{
		{"legit", legit, l, nil},
		{"legit without content size", noFCS, l, nil},
		{"content size over limit", zeros, l, ErrDecompressedTooLarge},
		{"RLE bomb without content size", rleBomb, l, ErrDecompressedTooLarge},
		{"content size understated", withFCS(uint32(len(raw) / 2)), l, ErrBadFrame},
		{"content size overstated", withFCS(uint32(len(raw) + 1)), l, ErrBadFrame},
		{"content size beyond the blocks", withFCS(30 << 20), l, ErrBadFrame},
		{"legit but over a small limit", legit, Limits{MaxDecompressed: 512 << 10}, ErrDecompressedTooLarge},
		{"window over limit", zstdFrame(30, zstdBlock(true, zstdBlockRaw, 1, []byte{0})), Limits{MaxDecompressed: 1 << 20}, ErrDecompressedTooLarge},
		{"two frames", append(bytes.Clone(legit), legit...), l, ErrBadFrame},
		{"trailing byte", append(bytes.Clone(legit), 0), l, ErrBadFrame},
		{"truncated", legit[:len(legit)-1], l, ErrBadFrame},
		{"truncated in block header", zstdFrame(17, []byte{1}), l, ErrBadFrame},
		{"no last block", zstdFrame(17, zstdBlock(false, zstdBlockRaw, 1, []byte{0})), l, ErrBadFrame},
		{"reserved block type", zstdFrame(17, zstdBlock(true, 3, 1, []byte{0})), l, ErrBadFrame},
		{"tiny compressed block", zstdFrame(17, zstdBlock(true, zstdBlockCompressed, 1, []byte{0})), l, ErrBadFrame},
		{"oversized raw block", zstdFrame(20, zstdBlock(true, zstdBlockRaw, zstdMaxBlock+1, make([]byte, zstdMaxBlock+1))), l, ErrBadFrame},
		{"skippable frame", []byte{0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0}, l, ErrBadFrame},
		{"dictionary", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x01, 0x38, 0x07, 0x01, 0, 0}, l, ErrBadFrame},
		{"not zstd", []byte("definitely not zstd"), l, ErrBadFrame},
		{"valid zstd, not a batch", enc.EncodeAll([]byte("hello, hello, hello"), nil), l, ErrMalformed},
	}
	for _, c := range cases {
		for _, d := range []struct {
			name string
			dec  *zstd.Decoder
		}{{"ours", dec}, {"lax", lax}} {
			t.Run(c.name+"/"+d.name, func(t *testing.T) {
				frame := frameOf(FrameBatch, flagZstd, c.body)
				decode := func() error { _, _, err := DecodeFrame(frame, d.dec, c.l); return err }
				err := decode()
				if c.want == nil {
					if err != nil {
						t.Fatalf("rejected: %v", err)
					}
					return
				}
				if !errors.Is(err, c.want) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
				if c.want == ErrDecompressedTooLarge {
					if n := bytesAllocated(3, func() { _ = decode() }); n > 64<<10 {
						t.Fatalf("refusing a bomb allocated %d bytes", n)
					}
				}
			})
		}
	}
}

// A compressed body may decompress past MaxBatchBytes (the wire bound) up
// to MaxDecompressed; an uncompressed one may not.
func TestWireAndDecompressedBounds(t *testing.T) {
	l := Limits{MaxBatchBytes: 8 << 10, MaxDecompressed: 64 << 10}
	enc, dec := codecs(t, l)
	b := sealedBatch(t, 16, 1500)
	raw, _ := EncodeBatch(nil, b)
	if len(raw) <= l.MaxBatchBytes || len(raw) > l.MaxDecompressed {
		t.Fatalf("test batch is %d bytes", len(raw))
	}
	frame, _ := EncodeFrame(nil, b, enc)
	if f, _, err := DecodeFrame(frame, dec, l); err != nil || !proto.Equal(f.Batch, b) {
		t.Fatalf("compressed: %v", err)
	}
	plain, _ := EncodeFrame(nil, b, nil)
	if _, _, err := DecodeFrame(plain, dec, l); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("plain: %v", err)
	}
	l.MaxDecompressed = len(raw) - 1
	if _, _, err := DecodeFrame(frame, dec, l); !errors.Is(err, ErrDecompressedTooLarge) {
		t.Fatalf("over MaxDecompressed: %v", err)
	}
}

func TestFrameKindString(t *testing.T) {
	if FrameBatch.String() != "batch" || FrameReceiptBatch.String() != "receipt-batch" || FrameKind(9).String() != "FrameKind(9)" {
		t.Fatal("FrameKind.String")
	}
}
