package router

import (
	"bytes"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Registry is the governance view the router needs; govchain.Cache
// satisfies it. Pipe must be cheap and must not block.
type Registry interface {
	Pipe(id string) (*govchain.Pipe, bool)
}

// checker is the deterministic stage-1 core: given a decoded packet and the
// governance view it accepts or rejects, and tracks the next expected
// sequence per pipe. Not safe for concurrent use: one per shard.
type checker struct {
	relayID string
	reg     Registry
	next    map[string]uint64 // pipe id -> next expected sequence
}

func newChecker(relayID string, reg Registry) *checker {
	return &checker{relayID: relayID, reg: reg, next: map[string]uint64{}}
}

// reset forgets sequence state, e.g. when partitions move: the first packet
// of a pipe seen after a reset sets its position again.
func (c *checker) reset() { c.next = map[string]uint64{} }

// resolve checks everything about p except its signature and sequence, and
// returns its pipe and destination relay.
func (c *checker) resolve(p *amdp.Packet) (*govchain.Pipe, error) {
	rej := func(reason error, detail string) error {
		return &RejectError{Pipe: p.GetPipeId(), Seq: p.GetSequence(), Reason: reason, Detail: detail}
	}
	pipe, ok := c.reg.Pipe(p.GetPipeId())
	if !ok {
		return nil, rej(ErrUnknownPipe, "")
	}
	switch {
	case pipe.Status == govchain.PipeStatus_PIPE_PROPOSED:
		return nil, rej(ErrPipeNotActive, "destination org "+pipe.Destination.GetOrg()+" has not authorized it")
	case pipe.Status != govchain.PipeStatus_PIPE_ACTIVE:
		return nil, rej(ErrPipeNotActive, "suspended: "+pipe.StatusReason)
	case pipe.Source.GetRelayId() != c.relayID:
		return nil, rej(ErrNotOurPipe, "its source relay is "+pipe.Source.GetRelayId())
	}
	if max := pipe.GetLimits().GetMaxPayload(); max > 0 && len(p.Payload) > int(max) {
		return nil, rej(ErrPayloadTooLarge, "")
	}
	src := pipe.Source
	want := crypto.AddressOf(crypto.Suite(src.Suite), src.PublicKey)
	if p.GetCredential() == nil || !bytes.Equal(p.Credential.Signer, want[:]) || p.Credential.Suite != src.Suite {
		return nil, rej(ErrBadSignature, "credential does not name the pipe's source account")
	}
	return pipe, nil
}

// verify checks the app's signature (stage 1) against the pipe's source key.
func verify(p *amdp.Packet, pipe *govchain.Pipe) error {
	if err := amdp.VerifyPacket(p, crypto.Suite(pipe.Source.Suite), pipe.Source.PublicKey); err != nil {
		return &RejectError{Pipe: p.PipeId, Seq: p.Sequence, Reason: ErrBadSignature, Detail: err.Error()}
	}
	return nil
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
		return &RejectError{Pipe: p.PipeId, Seq: p.Sequence, Reason: ErrSequenceGap,
			Detail: "expected " + itoa(next)}
	}
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
