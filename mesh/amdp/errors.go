package amdp

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every rejection this package returns wraps exactly one
// of them, so that a caller can branch with errors.Is and count rejections
// with Reason. Errors that are not rejections (a Signer that failed, a nil
// zstd codec) wrap none.
var (
	// ErrMalformed is returned by the decoders for input that is not a
	// valid protobuf encoding of the expected message.
	ErrMalformed = errors.New("malformed message")
	// ErrMissingField is returned by Validate for a required field left
	// empty: pipe id, relay ids, header, credential, signature.
	ErrMissingField = errors.New("missing field")
	// ErrFieldTooLong is returned by Validate for a string or byte field
	// longer than its limit (pipe id, relay id, suite, reason, tx hash,
	// signature) or for a string that is not valid UTF-8.
	ErrFieldTooLong = errors.New("field too long")
	// ErrBadLength is returned by Validate for a fixed-size field (packet
	// id, result hash, Merkle root) of the wrong length.
	ErrBadLength = errors.New("field has the wrong length")
	// ErrPayloadTooLarge is returned by Validate for a packet payload over
	// Limits.MaxPayload.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrPacketTooLarge is returned by DecodePacket for input longer than
	// any valid packet can be, before it is parsed.
	ErrPacketTooLarge = errors.New("packet too large")
	// ErrBadSequence is returned by Validate for a zero packet sequence or
	// batch sequence: both start at 1.
	ErrBadSequence = errors.New("bad sequence")
	// ErrBadOperation is returned by Validate for an unspecified or
	// unknown packet operation.
	ErrBadOperation = errors.New("bad operation")
	// ErrBadStatus is returned by Validate for an unspecified or unknown
	// receipt status.
	ErrBadStatus = errors.New("bad receipt status")
	// ErrNoTimeout is returned by Validate for a packet with neither a
	// timeout height nor a timeout time: the compensator could never give
	// up on it.
	ErrNoTimeout = errors.New("packet has no timeout")
	// ErrBadCredential is returned by Validate for a malformed credential
	// and by VerifyPacket when the credential does not name the key it is
	// checked against (other suite, other address, unusable key).
	ErrBadCredential = errors.New("bad credential")
	// ErrBadSignature is returned by the Verify functions when a signature
	// does not verify.
	ErrBadSignature = errors.New("bad signature")
	// ErrTooManyPackets is returned by Validate and DecodeBatch for a batch
	// with more than Limits.MaxPacketsPerBatch packets; DecodeBatch
	// returns it before allocating them.
	ErrTooManyPackets = errors.New("too many packets")
	// ErrTooManyReceipts is ErrTooManyPackets for receipt batches.
	ErrTooManyReceipts = errors.New("too many receipts")
	// ErrEmptyBatch is returned by Validate for a batch or receipt batch
	// with nothing in it.
	ErrEmptyBatch = errors.New("empty batch")
	// ErrCountMismatch is returned by Validate when a header's packet or
	// receipt count differs from the number carried.
	ErrCountMismatch = errors.New("count mismatch")
	// ErrMerkleRoot is returned by the Verify functions when a header's
	// Merkle root is not the root of what the batch carries.
	ErrMerkleRoot = errors.New("merkle root mismatch")
	// ErrDuplicatePacket is returned when one packet id appears twice in a
	// batch or receipt batch.
	ErrDuplicatePacket = errors.New("duplicate packet id")
	// ErrBatchTooLarge is returned by DecodeBatch, DecodeReceiptBatch and
	// the frame decoders for input over Limits.MaxBatchBytes, before it is
	// parsed.
	ErrBatchTooLarge = errors.New("batch too large")
	// ErrDecompressedTooLarge is returned by the frame decoders when a
	// compressed body could decompress to more than Limits.MaxDecompressed;
	// it is decided from the zstd frame's structure before decompressing.
	ErrDecompressedTooLarge = errors.New("decompressed size too large")
	// ErrBadFrame is returned by the frame decoders for an unknown kind or
	// flag, a length that does not match, or a zstd body that is not one
	// well-formed frame.
	ErrBadFrame = errors.New("bad frame")
	// ErrShortFrame is returned by ParseFrameHeader and DecodeFrame when
	// the input ends before the frame does: read more and try again.
	ErrShortFrame = errors.New("short frame")
)

// ValidationError says which field broke which rule. Reason is one of the
// sentinels above; errors.Is(err, ErrPayloadTooLarge) sees through it.
type ValidationError struct {
	Field  string // dotted path, e.g. "packets[3].payload"
	Reason error  // a sentinel from this package
	Detail string // human detail, e.g. "70000 bytes, limit 65536"
}

func (e *ValidationError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("amdp: %s: %v", e.Field, e.Reason)
	}
	return fmt.Sprintf("amdp: %s: %v: %s", e.Field, e.Reason, e.Detail)
}

func (e *ValidationError) Unwrap() error { return e.Reason }

func invalid(field string, reason error, detail string) error {
	return &ValidationError{Field: field, Reason: reason, Detail: detail}
}

func invalidf(field string, reason error, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// within prefixes the field of a ValidationError with the path of the
// message that contains it, so that errors from nested messages say where
// they are ("packets[3].payload").
func within(prefix string, err error) error {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	return &ValidationError{Field: prefix + "." + ve.Field, Reason: ve.Reason, Detail: ve.Detail}
}

// Reason returns a short, stable label for err, meant for a metric's
// "reason" label: "" for nil, the sentinel's label when err wraps one of
// this package's sentinels, and "other" otherwise. Labels never change once
// released; new sentinels get new labels.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	// Signature and credential first: they may wrap a crypto error too.
	case errors.Is(err, ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, ErrBadCredential):
		return "bad_credential"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrMissingField):
		return "missing_field"
	case errors.Is(err, ErrFieldTooLong):
		return "field_too_long"
	case errors.Is(err, ErrBadLength):
		return "bad_length"
	case errors.Is(err, ErrPayloadTooLarge):
		return "payload_too_large"
	case errors.Is(err, ErrPacketTooLarge):
		return "packet_too_large"
	case errors.Is(err, ErrBadSequence):
		return "bad_sequence"
	case errors.Is(err, ErrBadOperation):
		return "bad_operation"
	case errors.Is(err, ErrBadStatus):
		return "bad_status"
	case errors.Is(err, ErrNoTimeout):
		return "no_timeout"
	case errors.Is(err, ErrTooManyPackets):
		return "too_many_packets"
	case errors.Is(err, ErrTooManyReceipts):
		return "too_many_receipts"
	case errors.Is(err, ErrEmptyBatch):
		return "empty_batch"
	case errors.Is(err, ErrCountMismatch):
		return "count_mismatch"
	case errors.Is(err, ErrMerkleRoot):
		return "merkle_root"
	case errors.Is(err, ErrDuplicatePacket):
		return "duplicate_packet"
	case errors.Is(err, ErrBatchTooLarge):
		return "batch_too_large"
	case errors.Is(err, ErrDecompressedTooLarge):
		return "decompressed_too_large"
	case errors.Is(err, ErrBadFrame):
		return "bad_frame"
	case errors.Is(err, ErrShortFrame):
		return "short_frame"
	default:
		return "other"
	}
}
