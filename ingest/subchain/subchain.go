// Package subchain holds the types of the chain plugin interface: a
// subchain as the listener, the receiving mesh, the verifier and the
// compensator see it. It is a leaf: the packages that consume these types
// import it without the Kafka listener or franz-go.
package subchain

import (
	"context"
	"iter"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Event is one cross-chain request found in a finalized block: the packet
// the source app signed and submitted as a tx.
type Event struct {
	Height uint64
	TxHash []byte
	Packet *amdp.Packet
}

// Block is a finalized block and the cross-chain requests it holds (a block
// may hold none).
type Block struct {
	Height uint64
	Hash   []byte
	Events []Event
}

// Delivery is the outcome of delivering one packet on the destination
// chain, as that chain recorded it.
type Delivery struct {
	PacketID   [32]byte
	Status     amdp.ReceiptStatus // delivered, or refused deterministically by the destination (rejected, timed out)
	TxHash     []byte
	Height     uint64
	ResultHash [32]byte
	Reason     string // why it was rejected
}

// Head is a chain's last committed block: its height and its time (unix
// ms, from the block, not from a relay's clock).
type Head struct {
	Height     uint64
	TimeUnixMs uint64
}

// Chain is the plugin interface of one subchain type. Implementations must
// be safe for concurrent use.
type Chain interface {
	// ID is the subchain id registered on the governance chain.
	ID() string

	// Blocks streams finalized blocks with height >= from, in height order
	// and without gaps, until ctx ends or the chain stops; then the channel
	// closes and Err says why (nil after ctx ended). A slow reader slows
	// the stream: nothing is dropped.
	Blocks(ctx context.Context, from uint64) (<-chan Block, error)

	// Err reports why the last Blocks stream closed.
	Err() error

	// Deliver executes packets on this chain as txs, in order, and returns
	// one Delivery per packet once they are committed. A deterministic
	// refusal by the destination contract is a Delivery with status
	// rejected, not an error; an error means nothing can be said about the
	// packets (transient: retry, then ask FindDelivery).
	Deliver(ctx context.Context, packets []*amdp.Packet) ([]Delivery, error)

	// FindDelivery looks up, by packet id, whether this chain already
	// executed the packet: how a relay that crashed mid-delivery learns
	// what landed, and how verifiers confirm a receipt.
	//
	// Refusals are records like executions: a packet the chain refused
	// (REJECTED by its contract, TIMED_OUT because its timeout had passed
	// at the block it would have executed in) is found with that status,
	// its tx and height, so a verifier can check a refusal as it checks a
	// delivery. Once found, the record never changes.
	FindDelivery(ctx context.Context, packetID [32]byte) (Delivery, bool, error)

	// Head returns the last committed block's height and time. A packet
	// that FindDelivery does not find after Head returned was not executed
	// at any height up to Head's: with Head at or past the packet's
	// timeout that is the proof of non-execution a source needs to roll
	// it back for timeout (IBC's rule), since the chain never executes a
	// packet past its timeout.
	Head(ctx context.Context) (Head, error)

	// Rollback undoes the source app's request (pipe, sequence) on this
	// chain after the destination refused it.
	Rollback(ctx context.Context, pipeID string, seq uint64, reason string) error
}

// Request is a source request as its chain recorded it.
type Request struct {
	Pipe     string
	Seq      uint64
	Height   uint64
	TxHash   []byte
	PacketID [32]byte
}

// Rollback is the undoing of a source request as its chain recorded it.
type Rollback struct {
	Pipe   string
	Seq    uint64
	Height uint64
	TxHash []byte
	Reason string
}

// Execution is what a destination chain recorded about one packet: its
// first outcome (an execution or a refusal) and how many times a delivery
// of it was executed (more than 1: duplicates; 0 for a refusal that never
// executed, e.g. TIMED_OUT).
type Execution struct {
	Pipe  string
	Seq   uint64
	Count uint64
	Delivery
}

// Records lists what a chain recorded for one pipe over a sequence range,
// for audits that compare a whole period at once (reconciliation): one
// range read each instead of a FindDelivery per packet. It is separate
// from Chain because a chain plugin may not be able to list (a remote
// read-only endpoint); the auditor asserts it.
//
// Each method yields the records with from <= seq <= to in sequence
// order, from one consistent view of the committed state, and stops at
// the first error (yielded with a zero record). Ending the loop early
// releases the view. Implementations must be safe for concurrent use.
type Records interface {
	// Requests lists the source requests the chain accepted.
	Requests(ctx context.Context, pipe string, from, to uint64) iter.Seq2[Request, error]
	// Rollbacks lists the source requests the chain rolled back.
	Rollbacks(ctx context.Context, pipe string, from, to uint64) iter.Seq2[Rollback, error]
	// Executions lists the packets of the pipe the chain executed or
	// refused as a destination.
	Executions(ctx context.Context, pipe string, from, to uint64) iter.Seq2[Execution, error]
}
