package router

import (
	"errors"
	"fmt"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Rejections of a packet at stage 1. Each is counted by Reason and logged;
// a rejected packet is never sent and never stops the shard.
var (
	// ErrMalformed: the record's bytes are not a valid AMDP packet.
	ErrMalformed = errors.New("malformed packet")
	// ErrUnknownPipe: no pipe with the packet's id is on the governance chain.
	ErrUnknownPipe = errors.New("unknown pipe")
	// ErrPipeNotActive: the pipe is proposed (not authorized) or suspended.
	ErrPipeNotActive = errors.New("pipe not active")
	// ErrNotOurPipe: the pipe's source relay is another relay.
	ErrNotOurPipe = errors.New("pipe belongs to another relay")
	// ErrBadSignature: the app's signature does not verify against the
	// pipe's source key, or the credential names another account.
	ErrBadSignature = errors.New("bad packet signature")
	// ErrSequenceGap: the sequence skips ahead of the next expected one.
	ErrSequenceGap = errors.New("sequence gap")
	// ErrSequenceReplay: the sequence was already routed.
	ErrSequenceReplay = errors.New("sequence replay")
	// ErrPayloadTooLarge: the payload exceeds the pipe's limit.
	ErrPayloadTooLarge = errors.New("payload exceeds the pipe's limit")
)

// RejectError is a stage-1 rejection of one packet.
type RejectError struct {
	Pipe   string
	Seq    uint64
	Reason error // one of the sentinels above
	Detail string
}

func (e *RejectError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("pipe %s seq %d: %v", e.Pipe, e.Seq, e.Reason)
	}
	return fmt.Sprintf("pipe %s seq %d: %v: %s", e.Pipe, e.Seq, e.Reason, e.Detail)
}

func (e *RejectError) Unwrap() error { return e.Reason }

// Reason is a stable metric label for a rejection.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrUnknownPipe):
		return "unknown_pipe"
	case errors.Is(err, ErrPipeNotActive):
		return "pipe_not_active"
	case errors.Is(err, ErrNotOurPipe):
		return "not_our_pipe"
	case errors.Is(err, ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, ErrSequenceGap):
		return "sequence_gap"
	case errors.Is(err, ErrSequenceReplay):
		return "sequence_replay"
	case errors.Is(err, ErrPayloadTooLarge):
		return "payload_too_large"
	}
	if r := amdp.Reason(err); r != "other" {
		return r
	}
	return "other"
}
