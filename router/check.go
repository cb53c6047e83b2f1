package router

import (
	"fmt"
	"strconv"

	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/check"
)

// Registry is the governance view the router needs; govchain.Cache
// satisfies it. Pipe and Account must be cheap and must not block.
type Registry interface {
	Pipe(id string) (*govchain.Pipe, bool)
	check.Accounts
}

// checker is the deterministic stage-1 core: given a decoded packet and the
// governance view it accepts or rejects, and tracks the next expected
// sequence per pipe. The pipe and signature rules are package check's,
// shared with the receiving relay. Not safe for concurrent use: one per
// shard.
type checker struct {
	relayID    string
	reg        Registry
	maxPayload int
	next       map[string]uint64 // pipe id -> next expected sequence
}

func newChecker(relayID string, reg Registry, maxPayload int) *checker {
	return &checker{relayID: relayID, reg: reg, maxPayload: maxPayload, next: map[string]uint64{}}
}

// reset forgets sequence state, e.g. when partitions move: the first packet
// of a pipe seen after a reset sets its position again.
func (c *checker) reset() { c.next = map[string]uint64{} }

func reject(p *amdp.Packet, err error) error {
	if err == nil {
		return nil
	}
	return &RejectError{Pipe: p.GetPipeId(), Seq: p.GetSequence(), Reason: err}
}

// resolve finds p's pipe and checks that p is authentic short of its
// signature: the pipe is known and starts at this relay, and the
// credential names its source key. The pipe is returned even with an
// error, when known, to attribute the offence.
func (c *checker) resolve(p *amdp.Packet) (*govchain.Pipe, error) {
	pipe, ok := c.reg.Pipe(p.GetPipeId())
	return pipe, reject(p, check.Authentic(p, pipe, ok, check.Ends{From: c.relayID}, c.reg))
}

// admit checks that an authentic packet's pipe takes it now (check.Admissible).
func (c *checker) admit(p *amdp.Packet, pipe *govchain.Pipe) error {
	return reject(p, check.Admissible(p, pipe, c.maxPayload))
}

// sequence checks and advances the pipe's sequence. Packets must be given
// in their Kafka order (one pipe is one partition, so that is the source
// chain's order).
func (c *checker) sequence(p *amdp.Packet) error {
	next, seen := c.next[p.PipeId]
	switch {
	case !seen || p.Sequence == next:
		c.next[p.PipeId] = p.Sequence + 1
		return nil
	case p.Sequence < next:
		return &RejectError{Pipe: p.PipeId, Seq: p.Sequence, Reason: ErrSequenceReplay}
	default:
		return &RejectError{Pipe: p.PipeId, Seq: p.Sequence, Reason: fmt.Errorf("%w: expected %s", ErrSequenceGap, strconv.FormatUint(next, 10))}
	}
}
