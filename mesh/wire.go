package mesh

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
	"github.com/quic-go/quic-go"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// frameKindError is the kind byte of the mesh's error frame. It has the
// layout of an amdp frame header (kind, flags, uvarint length) with a kind
// that amdp never uses (amdp's kinds are small integers), so a reader
// tells the two apart by the first byte.
const frameKindError = 0x80

// maxErrorBody bounds an error frame's body; a reader refuses more before
// reading it.
const maxErrorBody = 1024

// maxReasonLabel bounds the reason label in an error frame.
const maxReasonLabel = 64

// errClass is the first byte of an error frame's body: what the sender
// should do about it.
type errClass byte

const (
	// classRejected: the batch is invalid; resending it unchanged fails
	// again. Send returns a RemoteError matching ErrBatchRejected.
	classRejected errClass = 1
	// classRetry: the receiver failed (delivery, store, shutdown);
	// resend the same batch later. Send returns a RemoteError matching
	// ErrPeerFailed.
	classRetry errClass = 2
)

// QUIC application error codes. Stream codes reset one exchange; the
// connection code closes a connection.
const (
	streamCanceled quic.StreamErrorCode = 0x1 // the sender gave up (ctx)
	streamRejected quic.StreamErrorCode = 0x2 // the receiver stopped reading a frame it rejected
	streamShutdown quic.StreamErrorCode = 0x3 // the endpoint is closing
	streamTimeout  quic.StreamErrorCode = 0x4 // the exchange took longer than StreamTimeout

	connShutdown quic.ApplicationErrorCode = 0x1 // the relay is shutting down
)

// appendErrorFrame appends an error frame:
//
//	kind   1 byte  0x80
//	flags  1 byte  0
//	length uvarint body length, 1 .. 1024
//	body   class (1 byte: 1 rejected, 2 retry) || uvarint(len(reason)) ||
//	       reason (stable label, ≤ 64 bytes) || detail (UTF-8, the rest)
//
// reason and detail are cut, at a rune boundary, to fit.
func appendErrorFrame(dst []byte, class errClass, reason, detail string) []byte {
	reason = truncateUTF8(reason, maxReasonLabel)
	fixed := 1 + uvarintLen(uint64(len(reason))) + len(reason)
	detail = truncateUTF8(detail, maxErrorBody-fixed)
	dst = append(dst, frameKindError, 0)
	dst = binary.AppendUvarint(dst, uint64(fixed+len(detail)))
	dst = append(dst, byte(class))
	dst = binary.AppendUvarint(dst, uint64(len(reason)))
	dst = append(dst, reason...)
	return append(dst, detail...)
}

// decodeErrorBody parses an error frame's body. Errors wrap
// amdp.ErrBadFrame.
func decodeErrorBody(body []byte) (*RemoteError, error) {
	bad := func(detail string) error {
		return &amdp.ValidationError{Field: "error_frame", Reason: amdp.ErrBadFrame, Detail: detail}
	}
	if len(body) == 0 || len(body) > maxErrorBody {
		return nil, bad(fmt.Sprintf("body of %d bytes", len(body)))
	}
	re := &RemoteError{}
	switch errClass(body[0]) {
	case classRejected:
	case classRetry:
		re.Retry = true
	default:
		return nil, bad(fmt.Sprintf("unknown class %d", body[0]))
	}
	n, k := binary.Uvarint(body[1:])
	if k <= 0 || n > maxReasonLabel || n > uint64(len(body)-1-k) {
		return nil, bad("bad reason length")
	}
	reason, detail := body[1+k:1+k+int(n)], body[1+k+int(n):]
	if !utf8.Valid(reason) || !utf8.Valid(detail) {
		return nil, bad("not valid UTF-8")
	}
	re.Reason, re.Detail = string(reason), string(detail)
	return re, nil
}

// streamError marks a failure of the stream or connection under an
// exchange (reset, closed, timed out), as opposed to a peer speaking the
// protocol wrongly: the exchange may succeed on a new stream.
type streamError struct{ err error }

func (e *streamError) Error() string { return "mesh: stream: " + e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

func isStreamError(err error) bool {
	var se *streamError
	return errors.As(err, &se)
}

// shortFrame is the protocol error of a stream that ended inside a frame.
func shortFrame(detail string) error {
	return &amdp.ValidationError{Field: "frame", Reason: amdp.ErrShortFrame, Detail: detail}
}

// errNoFrame is readFrame's error for a stream that ended cleanly before
// a frame began.
var errNoFrame = shortFrame("stream ended before a frame")

// readFrame reads one frame from r: an amdp frame, or, when allowError is
// set, an error frame (returned as a RemoteError without its Relay). The
// header is read a byte at a time, so that a frame shorter than
// MaxFrameHeaderLen never waits for bytes that will not come, and checked
// with amdp.ParseFrameHeader before anything is allocated for the body.
// I/O failures are streamErrors; everything else is the peer's protocol
// error and wraps an amdp sentinel.
func (c *codec) readFrame(r *bufio.Reader, allowError bool) (amdp.Frame, *RemoteError, error) {
	var hdr [amdp.MaxFrameHeaderLen]byte
	n := 0
	for n < len(hdr) {
		b, err := r.ReadByte()
		if err == io.EOF {
			if n == 0 {
				return amdp.Frame{}, nil, errNoFrame
			}
			return amdp.Frame{}, nil, shortFrame("stream ended inside the frame header")
		}
		if err != nil {
			return amdp.Frame{}, nil, &streamError{err}
		}
		hdr[n] = b
		n++
		// The length is a uvarint from byte 2 on; it ends with the first
		// byte whose top bit is clear.
		if n >= 3 && b < 0x80 {
			break
		}
	}
	if hdr[n-1] >= 0x80 {
		// MaxFrameHeaderLen bytes and the length has not ended: more
		// bytes cannot make it valid (amdp.ParseFrameHeader would call
		// this short).
		return amdp.Frame{}, nil, &amdp.ValidationError{Field: "frame.length", Reason: amdp.ErrBadFrame, Detail: "length overflows 64 bits"}
	}
	if allowError && hdr[0] == frameKindError {
		re, err := readErrorBody(r, hdr[:n])
		return amdp.Frame{}, re, err
	}
	h, _, err := amdp.ParseFrameHeader(hdr[:n], c.limits)
	if err != nil {
		return amdp.Frame{}, nil, err
	}
	bp := c.bufs.get(0)
	defer c.bufs.put(bp)
	body, err := readBody(r, (*bp)[:0], h.Len)
	*bp = body[:0] // the grown buffer goes back to the pool
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return amdp.Frame{}, nil, shortFrame(fmt.Sprintf("stream ended inside a %d-byte body", h.Len))
		}
		return amdp.Frame{}, nil, &streamError{err}
	}
	// The decoded messages do not alias body (protobuf copies bytes
	// fields), so the buffer goes back to the pool.
	f, err := amdp.DecodeFrameBody(h, body, c.dec, c.limits)
	return f, nil, err
}

// readBody reads an n-byte body into b, growing b as the bytes arrive
// rather than by n at once: a header is a few bytes and may claim up to
// MaxBatchBytes, so allocating what it claims would let a peer make the
// receiver allocate 16 MiB per stream for 6 bytes. Growing by doubling
// copies at most n bytes more than reading into one buffer would.
func readBody(r io.Reader, b []byte, n int) ([]byte, error) {
	for len(b) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(n-len(b), max(cap(b), minBodyBuf)))
		}
		k, err := io.ReadFull(r, b[len(b):min(n, cap(b))])
		b = b[:len(b)+k]
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

func readErrorBody(r *bufio.Reader, hdr []byte) (*RemoteError, error) {
	bad := func(detail string) error {
		return &amdp.ValidationError{Field: "error_frame", Reason: amdp.ErrBadFrame, Detail: detail}
	}
	if hdr[1] != 0 {
		return nil, bad(fmt.Sprintf("unknown flags %#02x", hdr[1]))
	}
	size, k := binary.Uvarint(hdr[2:])
	if k <= 0 || size == 0 || size > maxErrorBody {
		return nil, bad("bad length")
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, shortFrame("stream ended inside an error frame")
		}
		return nil, &streamError{err}
	}
	return decodeErrorBody(body)
}

// expectEOF reads what follows a frame: nothing but the end of the
// stream, since each side sends exactly one frame. Reading the end also
// completes the stream's receiving half, which releases it in QUIC.
func expectEOF(r *bufio.Reader) error {
	_, err := r.ReadByte()
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return &streamError{err}
	default:
		return fmt.Errorf("%w: bytes after the frame", ErrBadFrameOrder)
	}
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

// truncateUTF8 cuts s to at most max bytes without splitting a rune, and
// replaces invalid UTF-8, so that the result is always valid.
func truncateUTF8(s string, max int) string {
	if !utf8.ValidString(s) {
		s = string([]rune(s)) // invalid bytes become U+FFFD
	}
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max]
}

// codec encodes and reads frames with the endpoint's limits, zstd coders
// and buffers.
type codec struct {
	limits amdp.Limits
	enc    *zstd.Encoder // safe for concurrent use
	dec    *zstd.Decoder // safe for concurrent use
	bufs   bufPool
}

func newCodec(l amdp.Limits) (*codec, error) {
	enc, err := amdp.NewEncoder()
	if err != nil {
		return nil, err
	}
	dec, err := amdp.NewDecoder(l)
	if err != nil {
		enc.Close()
		return nil, err
	}
	return &codec{limits: l, enc: enc, dec: dec}, nil
}

func (c *codec) close() {
	c.enc.Close()
	c.dec.Close()
}

// maxPooledBuf: frame buffers are pooled, since a relay under load
// encodes or reads one frame per batch, but buffers larger than this are
// not kept, so that one huge batch does not pin its memory for ever.
const maxPooledBuf = 4 << 20

type bufPool struct{ p sync.Pool }

// minBodyBuf is the least a frame buffer holds: most frames fit.
const minBodyBuf = 64 << 10

func (bp *bufPool) get(n int) *[]byte {
	b, _ := bp.p.Get().(*[]byte)
	if b == nil || cap(*b) < n {
		nb := make([]byte, 0, max(n, minBodyBuf))
		b = &nb
	}
	return b
}

func (bp *bufPool) put(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bp.p.Put(b)
}
