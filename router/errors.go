package router

import (
	"errors"
	"fmt"

	"github.com/ccgpmesh/ccgp/mesh/check"
)

// Rejections of a packet at stage 1 that are the router's own; the pipe,
// credential and signature rules are package check's (check.ErrUnknownPipe,
// check.ErrWrongSource, amdp.ErrBadCredential, amdp.ErrBadSignature, ...),
// shared with the receiving relay. Each rejection is counted by Reason.
var (
	// ErrMalformed: the record's bytes are not a valid AMDP packet.
	ErrMalformed = errors.New("malformed packet")
	// ErrSequenceGap: the sequence skips ahead of the next expected one.
	ErrSequenceGap = errors.New("sequence gap")
	// ErrSequenceReplay: the sequence was already routed.
	ErrSequenceReplay = errors.New("sequence replay")
)

// RejectError is a stage-1 rejection of one packet.
type RejectError struct {
	Pipe   string
	Seq    uint64
	Reason error // wraps one of the sentinels above or of package check or amdp
	Detail string
}

func (e *RejectError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("pipe %s seq %d: %v", e.Pipe, e.Seq, e.Reason)
	}
	return fmt.Sprintf("pipe %s seq %d: %v: %s", e.Pipe, e.Seq, e.Reason, e.Detail)
}

func (e *RejectError) Unwrap() error { return e.Reason }

// Reason is a stable metric label for a rejection: the router's own, or
// check.Reason's (one set of labels with the receiving relay).
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrSequenceGap):
		return "sequence_gap"
	case errors.Is(err, ErrSequenceReplay):
		return "sequence_replay"
	}
	return check.Reason(err)
}
