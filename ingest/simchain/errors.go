package simchain

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by every method called after Close, by Submit,
	// Deliver and Rollback when the chain stops while they wait, and by Err
	// after a Blocks stream ended because the chain closed.
	ErrClosed = errors.New("simchain: chain closed")
	// ErrSequenceGap is returned (in a *SequenceError) by Submit for a
	// packet whose sequence skips the pipe's next one.
	ErrSequenceGap = errors.New("simchain: sequence gap")
	// ErrSequenceReplay is returned (in a *SequenceError) by Submit for a
	// packet whose sequence the pipe already used.
	ErrSequenceReplay = errors.New("simchain: sequence replay")
	// ErrInvalidPacket is returned by Submit and Deliver for a packet that
	// fails amdp validation; the amdp error is wrapped as well.
	ErrInvalidPacket = errors.New("simchain: invalid packet")
	// ErrUnknownRequest is returned by Rollback for a (pipe, sequence) that
	// no accepted source request has.
	ErrUnknownRequest = errors.New("simchain: no such request")
	// ErrCorrupt is returned when a stored record does not decode: the
	// database was written by something else or damaged.
	ErrCorrupt = errors.New("simchain: corrupt record")
	// ErrLocked is returned by Open when another process (or another
	// Chain in this one) has the store open: a running relay or demo
	// owns its chains' stores.
	ErrLocked = errors.New("simchain: store in use by another process")
)

// SequenceError is the cross-chain contract's refusal of a source request
// whose sequence is not the pipe's next one. Err is ErrSequenceGap or
// ErrSequenceReplay.
type SequenceError struct {
	Pipe string
	Got  uint64 // the packet's sequence
	Want uint64 // the pipe's next sequence, counting the mempool
	Err  error
}

func (e *SequenceError) Error() string {
	return fmt.Sprintf("%v: pipe %q: got sequence %d, want %d", e.Err, e.Pipe, e.Got, e.Want)
}

func (e *SequenceError) Unwrap() error { return e.Err }
