package mesh

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

func testCodec(t testing.TB) *codec {
	c, err := newCodec(effectiveLimits(amdp.Limits{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

func TestErrorFrameRoundTrip(t *testing.T) {
	c := testCodec(t)
	for _, tc := range []struct {
		class          errClass
		reason, detail string
	}{
		{classRejected, "bad_signature", "amdp: relay_signature: bad signature"},
		{classRetry, "deliver_failed", ""},
		{classRejected, strings.Repeat("r", 100), strings.Repeat("é", 2000)},
		{classRetry, "x", "invalid \xff utf-8"},
	} {
		f := appendErrorFrame(nil, tc.class, tc.reason, tc.detail)
		if len(f) > 2+2+maxErrorBody {
			t.Fatalf("error frame of %d bytes", len(f))
		}
		_, re, err := c.readFrame(bufio.NewReader(bytes.NewReader(f)), true)
		if err != nil {
			t.Fatal(err)
		}
		if re.Retry != (tc.class == classRetry) || !strings.HasPrefix(tc.reason, re.Reason) || !utf8.ValidString(re.Detail) || len(re.Reason) > maxReasonLabel {
			t.Fatalf("decoded %+v from %q/%q", re, tc.reason, tc.detail)
		}
		if tc.detail != "" && re.Detail == "" {
			t.Fatal("detail lost")
		}
	}
}

func TestReadFrame(t *testing.T) {
	c := testCodec(t)
	n := newTestNet(t, "relay-a", "relay-b")
	b := n.batch("relay-a", "relay-b", 1, n.packets("ab-1", 3, 500)...)
	compressed, err := amdp.EncodeFrame(nil, b, c.enc)
	if err != nil {
		t.Fatal(err)
	}
	if compressed[1] != 1 {
		t.Fatal("test batch did not compress")
	}
	f, re, err := c.readFrame(bufio.NewReader(bytes.NewReader(compressed)), false)
	if err != nil || re != nil || f.Kind != amdp.FrameBatch || len(f.Batch.Packets) != 3 {
		t.Fatalf("compressed batch: %v %v %v", f.Kind, re, err)
	}
	for _, tc := range []struct {
		in     string
		reason string
	}{
		{"", "short_frame"},
		{"\x01", "short_frame"},
		{"\x01\x00\x80", "short_frame"},
		{"\x01\x00\x05abc", "short_frame"},
		{"\x07\x00\x01a", "bad_frame"},
		{"\x01\x04\x01a", "bad_frame"},
		{"\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "bad_frame"},
		{"\x80\x00\x01\x01", "bad_frame"}, // error frames only where allowed
	} {
		_, _, err := c.readFrame(bufio.NewReader(strings.NewReader(tc.in)), false)
		if got := Reason(err); got != tc.reason || isStreamError(err) {
			t.Errorf("%q: %v (%s), want %s", tc.in, err, got, tc.reason)
		}
	}
	// An I/O failure is a streamError, not the peer's protocol error.
	_, _, err = c.readFrame(bufio.NewReader(failingReader{}), false)
	if !isStreamError(err) {
		t.Fatalf("I/O failure: %v, want a streamError", err)
	}
}

// TestReadFrameAllocatesAsBytesArrive: a header claiming the largest body
// costs memory only for the bytes that come, not for what it claims.
func TestReadFrameAllocatesAsBytesArrive(t *testing.T) {
	c := testCodec(t)
	claim := binary.AppendUvarint([]byte{byte(amdp.FrameBatch), 0}, uint64(c.limits.MaxBatchBytes))
	in := append(claim, make([]byte, 100<<10)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const runs = 10
	for range runs {
		if _, _, err := c.readFrame(bufio.NewReader(bytes.NewReader(in)), false); Reason(err) != "short_frame" {
			t.Fatalf("truncated body: %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 1<<20 {
		t.Fatalf("a %d-byte claim with 100 KiB of body allocated %d bytes", c.limits.MaxBatchBytes, per)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// FuzzReadFrame feeds arbitrary bytes to the stream reader on both sides
// of an exchange: it must never panic, and what it accepts must be a
// valid frame.
func FuzzReadFrame(f *testing.F) {
	c := testCodec(f)
	n := newTestNet(f, "relay-a", "relay-b")
	b := n.batch("relay-a", "relay-b", 1, n.packets("ab-1", 1, 0)...)
	plain, err := amdp.EncodeFrame(nil, b, nil)
	if err != nil {
		f.Fatal(err)
	}
	receipts, err := amdp.EncodeReceiptFrame(nil, &amdp.ReceiptBatch{Header: &amdp.ReceiptBatchHeader{FromRelay: "relay-b", ToRelay: "relay-a", BatchSeq: 1}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	maxLen := binary.AppendUvarint([]byte{byte(amdp.FrameBatch), 0}, uint64(c.limits.MaxBatchBytes))
	for _, seed := range [][]byte{
		// valid frames, and a frame followed by more bytes
		plain, receipts, append(bytes.Clone(plain), 0),
		appendErrorFrame(nil, classRejected, "bad_signature", "detail"),
		appendErrorFrame(nil, classRetry, "", ""),
		appendErrorFrame(nil, classRejected, strings.Repeat("r", maxReasonLabel), strings.Repeat("d", maxErrorBody)),
		// empty, truncated, malformed
		{}, []byte("\x01\x00\x05hello"), plain[:len(plain)-1], plain[:3], []byte("\x80\x00\x03\x02\x05ab"),
		[]byte("\x80\x00\x02\x03\x00"), []byte("\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
		// lengths at and over the limits, with no body behind them
		maxLen, binary.AppendUvarint([]byte{byte(amdp.FrameBatch), 0}, uint64(c.limits.MaxBatchBytes)+1),
		binary.AppendUvarint([]byte{frameKindError, 0}, maxErrorBody+1),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, allowError := range []bool{false, true} {
			fr, re, err := c.readFrame(bufio.NewReader(bytes.NewReader(in)), allowError)
			if err != nil {
				if isStreamError(err) {
					t.Fatalf("in-memory input gave a stream error: %v", err)
				}
				continue
			}
			switch {
			case re != nil:
				if !allowError || !utf8.ValidString(re.Reason) || !utf8.ValidString(re.Detail) {
					t.Fatalf("bad error frame accepted: %+v", re)
				}
			case fr.Kind == amdp.FrameBatch && fr.Batch == nil, fr.Kind == amdp.FrameReceiptBatch && fr.ReceiptBatch == nil:
				t.Fatal("frame without its message")
			}
		}
	})
}

func TestTruncateUTF8(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"abc", 5, "abc"},
		{"abcdef", 3, "abc"},
		{"ééé", 3, "é"},
		{"a\xffb", 10, "a\uFFFDb"},
	} {
		if got := truncateUTF8(tc.in, tc.max); got != tc.want {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestReasonLabels(t *testing.T) {
	for err, want := range map[error]string{
		nil:                                  "",
		&AuthError{Reason: ErrUntrustedCert}: "untrusted_cert",
		&RemoteError{Reason: "merkle_root"}:  "remote_merkle_root",
		&transient{ErrDeliver}:               "deliver_failed",
		amdp.ErrBadSignature:                 "bad_signature",
		errors.New("something"):              "other",
	} {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
	if !errors.Is(&AuthError{Reason: ErrFingerprintMismatch}, ErrAuth) {
		t.Error("AuthError does not match ErrAuth")
	}
}
