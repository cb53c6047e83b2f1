package amdp

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"
)

// FrameKind says what a frame's body holds.
type FrameKind byte

// Frame kinds. Zero is never valid, so a zeroed buffer is not a frame.
const (
	FrameBatch        FrameKind = 1
	FrameReceiptBatch FrameKind = 2
)

func (k FrameKind) String() string {
	switch k {
	case FrameBatch:
		return "batch"
	case FrameReceiptBatch:
		return "receipt-batch"
	default:
		return fmt.Sprintf("FrameKind(%d)", byte(k))
	}
}

// flagZstd marks a body compressed as one zstd frame. The other flag bits
// are reserved and must be zero, so that a peer speaking a later version
// is refused rather than misread.
const flagZstd = 0x01

// MaxFrameHeaderLen is the longest a frame header can be: kind, flags and
// a uvarint length. A stream reader that has this many bytes (or the whole
// stream) can always parse the header.
const MaxFrameHeaderLen = 2 + binary.MaxVarintLen64

// FrameHeader is a parsed frame header.
type FrameHeader struct {
	Kind       FrameKind
	Compressed bool
	Len        int // body length on the wire
}

// Frame is a decoded frame: exactly one of Batch and ReceiptBatch is set,
// as Kind says.
type Frame struct {
	Kind         FrameKind
	Batch        *Batch
	ReceiptBatch *ReceiptBatch
}

// NewEncoder returns a zstd encoder for EncodeFrame. It is safe for
// concurrent use; Close it when done.
func NewEncoder() (*zstd.Encoder, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		return nil, fmt.Errorf("amdp: zstd encoder: %w", err)
	}
	return enc, nil
}

// NewDecoder returns a zstd decoder for DecodeFrame whose own memory limits
// match l. DecodeFrame bounds decompression by l whatever decoder it is
// given; this one also never holds a window larger than l allows. It is
// safe for concurrent use; Close it when done.
func NewDecoder(l Limits) (*zstd.Decoder, error) {
	l = l.WithDefaults()
	max := uint64(l.MaxDecompressed)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(max), zstd.WithDecoderMaxWindow(max))
	if err != nil {
		return nil, fmt.Errorf("amdp: zstd decoder: %w", err)
	}
	return dec, nil
}

// EncodeFrame appends b as one frame to dst, compressed with enc unless enc
// is nil or the batch does not compress (then it is sent as is).
func EncodeFrame(dst []byte, b *Batch, enc *zstd.Encoder) ([]byte, error) {
	return encodeFrame(dst, FrameBatch, b, enc)
}

// EncodeReceiptFrame is EncodeFrame for a receipt batch.
func EncodeReceiptFrame(dst []byte, rb *ReceiptBatch, enc *zstd.Encoder) ([]byte, error) {
	return encodeFrame(dst, FrameReceiptBatch, rb, enc)
}

func encodeFrame(dst []byte, kind FrameKind, m proto.Message, enc *zstd.Encoder) ([]byte, error) {
	if enc == nil {
		head := len(dst)
		// Size caches the sizes that MarshalAppend then reuses.
		mo := proto.MarshalOptions{UseCachedSize: true}
		dst = append(dst, byte(kind), 0)
		dst = binary.AppendUvarint(dst, uint64(mo.Size(m)))
		out, err := mo.MarshalAppend(dst, m)
		if err != nil {
			return dst[:head], fmt.Errorf("amdp: encode %s: %w", kind, err)
		}
		return out, nil
	}
	raw, err := encode(nil, m, kind.String())
	if err != nil {
		return dst, err
	}
	head := len(dst)
	dst = append(dst, byte(kind), flagZstd)
	// The compressed length is known only afterwards, so reserve the
	// longest uvarint, compress straight into dst, then close the gap:
	// one copy instead of a second buffer.
	lenAt := len(dst)
	var gap [binary.MaxVarintLen64]byte
	dst = append(dst, gap[:]...)
	bodyAt := len(dst)
	dst = enc.EncodeAll(raw, dst)
	n := len(dst) - bodyAt
	if n >= len(raw) {
		dst = append(dst[:head], byte(kind), 0)
		dst = binary.AppendUvarint(dst, uint64(len(raw)))
		return append(dst, raw...), nil
	}
	k := binary.PutUvarint(gap[:], uint64(n))
	copy(dst[lenAt:], gap[:k])
	copy(dst[lenAt+k:], dst[bodyAt:])
	return dst[:lenAt+k+n], nil
}

// ParseFrameHeader parses the header at the start of src and returns it
// with its length in bytes. It refuses unknown kinds and flags, empty
// bodies, and bodies over l.MaxBatchBytes, so that a stream reader can
// check a frame before reading (and allocating for) its body. If src ends
// inside the header, the error is ErrShortFrame.
func ParseFrameHeader(src []byte, l Limits) (FrameHeader, int, error) {
	l = l.WithDefaults()
	var h FrameHeader
	if len(src) < 2 {
		return h, 0, invalidf("frame", ErrShortFrame, "%d bytes, header needs at least 3", len(src))
	}
	h.Kind = FrameKind(src[0])
	if h.Kind != FrameBatch && h.Kind != FrameReceiptBatch {
		return h, 0, invalidf("frame.kind", ErrBadFrame, "unknown kind %d", src[0])
	}
	if src[1]&^flagZstd != 0 {
		return h, 0, invalidf("frame.flags", ErrBadFrame, "unknown flags %#02x", src[1])
	}
	h.Compressed = src[1]&flagZstd != 0
	size, n := binary.Uvarint(src[2:])
	switch {
	case n == 0:
		return h, 0, invalid("frame.length", ErrShortFrame, "input ends inside the length")
	case n < 0:
		return h, 0, invalid("frame.length", ErrBadFrame, "length overflows 64 bits")
	case size == 0:
		return h, 0, invalid("frame.length", ErrBadFrame, "empty body")
	case size > uint64(l.MaxBatchBytes):
		return h, 0, invalidf("frame.length", ErrBatchTooLarge, "%d bytes, limit %d", size, l.MaxBatchBytes)
	}
	h.Len = int(size)
	return h, 2 + n, nil
}

// DecodeFrame decodes the frame at the start of src and returns it with
// the number of bytes it took; src may hold more after it. If src ends
// before the frame does, the error is ErrShortFrame. dec may be nil when
// the peer does not compress; see DecodeFrameBody for the bounds.
func DecodeFrame(src []byte, dec *zstd.Decoder, l Limits) (Frame, int, error) {
	h, n, err := ParseFrameHeader(src, l)
	if err != nil {
		return Frame{}, 0, err
	}
	if len(src)-n < h.Len {
		return Frame{}, 0, invalidf("frame", ErrShortFrame, "body is %d bytes, have %d", h.Len, len(src)-n)
	}
	f, err := DecodeFrameBody(h, src[n:n+h.Len], dec, l)
	if err != nil {
		return Frame{}, 0, err
	}
	return f, n + h.Len, nil
}

// DecodeFrameBody decodes the body of a frame whose header a stream reader
// parsed with ParseFrameHeader. A compressed body must be exactly one zstd
// frame, which may decompress to at most l.MaxDecompressed bytes: that is
// decided from the frame's header and block headers before decompressing,
// and enforced again while decompressing, so neither a lying content size
// nor a misconfigured dec can make it allocate more. The batch inside is
// then decoded and validated as by DecodeBatch.
func DecodeFrameBody(h FrameHeader, body []byte, dec *zstd.Decoder, l Limits) (Frame, error) {
	l = l.WithDefaults()
	if len(body) != h.Len {
		return Frame{}, invalidf("frame", ErrBadFrame, "body is %d bytes, header says %d", len(body), h.Len)
	}
	maxBytes := l.MaxBatchBytes
	if h.Compressed {
		raw, err := decompress(body, dec, l.MaxDecompressed)
		if err != nil {
			return Frame{}, err
		}
		body, maxBytes = raw, l.MaxDecompressed
	}
	f := Frame{Kind: h.Kind}
	var err error
	switch h.Kind {
	case FrameBatch:
		f.Batch, err = decodeBatch(body, l, maxBytes)
	case FrameReceiptBatch:
		f.ReceiptBatch, err = decodeReceiptBatch(body, l, maxBytes)
	default:
		err = invalidf("frame.kind", ErrBadFrame, "unknown kind %d", byte(h.Kind))
	}
	if err != nil {
		return Frame{}, err
	}
	return f, nil
}

func decompress(body []byte, dec *zstd.Decoder, max int) ([]byte, error) {
	if dec == nil {
		return nil, errors.New("amdp: frame is compressed but no zstd decoder was given")
	}
	bound, err := zstdBound(body, uint64(max))
	if err != nil {
		return nil, err
	}
	out, err := dec.DecodeAll(body, nil)
	switch {
	case errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, zstd.ErrWindowSizeExceeded):
		return nil, invalid("frame.body", ErrDecompressedTooLarge, err.Error())
	case err != nil:
		return nil, invalid("frame.body", ErrBadFrame, "zstd: "+err.Error())
	case uint64(len(out)) > bound:
		// zstd already enforces the bound; this keeps it true whatever
		// the library does.
		return nil, invalidf("frame.body", ErrDecompressedTooLarge, "%d bytes, bound %d", len(out), bound)
	}
	return out, nil
}
