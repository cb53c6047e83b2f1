// Package check is the one stage-1 check of an AMDP packet against its
// pipe's governance record, used by both places that check packets: the
// source relay's router before it batches a packet, and the destination
// relay's mesh before it delivers one. One copy of the rule, one set of
// sentinels and one set of metric labels (DESIGN §5a).
//
// A packet's check has two halves, kept apart because they lead to
// different outcomes:
//
//   - Authentic: the pipe exists, runs between the right relays, and the
//     credential and signature are the pipe source's. A failure here names
//     no verified request (a forged or misrouted record): the packet is
//     dropped and counted against the party it claims to come from, and is
//     never compensated, rolled back or anchored.
//   - Admissible: an authentic packet that its pipe refuses now (not
//     ACTIVE, payload over the pipe's limit). That is a real request
//     refused by governance: its refusal may be compensated.
package check

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Rejections of a packet by its pipe's record. Credential, signature and
// payload failures wrap amdp's sentinels (amdp.ErrBadCredential,
// amdp.ErrBadSignature, amdp.ErrPayloadTooLarge).
var (
	// ErrUnknownPipe: no pipe with the packet's id is on the governance chain.
	ErrUnknownPipe = errors.New("unknown pipe")
	// ErrPipeNotActive: the pipe is proposed (not authorized) or suspended.
	ErrPipeNotActive = errors.New("pipe not active")
	// ErrWrongSource: the pipe's source relay is not the relay that routes
	// (at the router) or sent (at the receiver) the packet.
	ErrWrongSource = errors.New("pipe does not start at this relay")
	// ErrWrongDestination: the pipe does not lead to the receiving relay.
	ErrWrongDestination = errors.New("pipe does not lead to this relay")
	// ErrRevokedKey: the pipe's source account is revoked. Its key may
	// have leaked, so nothing it signs names a verified request, however
	// good the signature.
	ErrRevokedKey = errors.New("source account revoked")
)

// Accounts is the governance view of accounts that Authentic needs; the
// relays' cache (govchain.Cache) satisfies it. Revoked reports whether the
// account at addr is on record as revoked (an unknown account is not).
type Accounts interface {
	Revoked(addr crypto.Address) bool
}

// Ends names the relays between which a packet is checked: From is the
// relay that routes or sent it, To the relay that receives it. An empty
// field is not checked (the router does not know To before it resolves
// the pipe).
type Ends struct{ From, To string }

// Authentic checks that p's pipe exists (pipe, found: the registry's
// answer), runs between ends, that p's credential names the pipe's source
// key, and that accts (nil: not checked) does not record the source
// account as revoked. A revoked account's pipes are suspended too, but a
// suspended pipe only refuses (Admissible) and the refusal of a request
// is compensated: a packet signed by a revoked key must not get that far.
// The signature is checked by Signatures, in batches.
func Authentic(p *amdp.Packet, pipe *govchain.Pipe, found bool, ends Ends, accts Accounts) error {
	switch {
	case !found || pipe == nil:
		return fmt.Errorf("%w: %q", ErrUnknownPipe, p.GetPipeId())
	case ends.From != "" && pipe.GetSource().GetRelayId() != ends.From:
		return fmt.Errorf("%w: pipe %s starts at relay %q, not %q", ErrWrongSource, p.GetPipeId(), pipe.GetSource().GetRelayId(), ends.From)
	case ends.To != "" && pipe.GetDestination().GetRelayId() != ends.To:
		return fmt.Errorf("%w: pipe %s leads to relay %q, not %q", ErrWrongDestination, p.GetPipeId(), pipe.GetDestination().GetRelayId(), ends.To)
	}
	src := pipe.GetSource()
	suite := crypto.Suite(src.GetSuite())
	addr := crypto.AddressOf(suite, src.GetPublicKey())
	c := p.GetCredential()
	if c == nil || c.Suite != string(suite) || string(c.Signer) != string(addr[:]) {
		// VerifyPacket says how, in its words, before it would look at
		// the signature.
		if err := amdp.VerifyPacket(p, suite, src.GetPublicKey()); err != nil {
			return err
		}
		return &amdp.ValidationError{Field: "credential", Reason: amdp.ErrBadCredential, Detail: "does not name the pipe's source account"}
	}
	if accts != nil && accts.Revoked(addr) {
		return fmt.Errorf("%w: %s", ErrRevokedKey, addr)
	}
	return nil
}

// Admissible checks that p's pipe takes it now: the pipe is ACTIVE and p's
// payload is within the smaller of maxPayload (the relay's bound; 0: none)
// and the pipe's own limit. Call it for authentic packets only.
func Admissible(p *amdp.Packet, pipe *govchain.Pipe, maxPayload int) error {
	switch st := pipe.GetStatus(); {
	case st == govchain.PipeStatus_PIPE_PROPOSED:
		return &Refusal{fmt.Errorf("%w: pipe %s: destination org %s has not authorized it", ErrPipeNotActive, p.GetPipeId(), pipe.GetDestination().GetOrg())}
	case st != govchain.PipeStatus_PIPE_ACTIVE:
		return &Refusal{fmt.Errorf("%w: pipe %s is suspended: %s", ErrPipeNotActive, p.GetPipeId(), pipe.GetStatusReason())}
	}
	if m := int(pipe.GetLimits().GetMaxPayload()); m > 0 && (maxPayload <= 0 || m < maxPayload) {
		maxPayload = m
	}
	if maxPayload > 0 && len(p.GetPayload()) > maxPayload {
		return &Refusal{&amdp.ValidationError{Field: "payload", Reason: amdp.ErrPayloadTooLarge,
			Detail: fmt.Sprintf("%d bytes, pipe %s allows %d", len(p.GetPayload()), p.GetPipeId(), maxPayload)}}
	}
	return nil
}

// Refusal is Admissible's verdict: an authentic packet that its pipe does
// not take now. It wraps the reason (ErrPipeNotActive or
// amdp.ErrPayloadTooLarge).
type Refusal struct{ Err error }

func (r *Refusal) Error() string { return r.Err.Error() }
func (r *Refusal) Unwrap() error { return r.Err }

// Item is one packet in a Signatures call: its pipe (resolved) and its
// verdict so far. Signatures checks only items whose Err is nil.
type Item struct {
	Packet *amdp.Packet
	Pipe   *govchain.Pipe
	Err    error
}

// Signatures verifies the stage-1 signature of every item whose Err is nil
// against its pipe's source key, and sets Err for those that fail.
// Signature checks are a relay's physical limit, so they are checked
// together, in batches spread over the cores (crypto.VerifyBatch, about
// twice as fast per signature as one at a time, with Ed25519 keys expanded
// once in keys, which may be nil); a packet that fails in its batch is
// checked again alone, for the precise error. The workers end before
// Signatures returns.
func Signatures(items []Item, keys *crypto.KeyCache) {
	size := 0
	for i := range items {
		if it := &items[i]; it.Err == nil {
			size += len(it.Packet.GetPayload()) + len(it.Packet.GetPipeId()) + 128 // fixed fields, signer and suite
		}
	}
	// One buffer holds every packet's signing bytes.
	buf := make([]byte, 0, size)
	sigs := make([]crypto.SigItem, 0, len(items))
	idx := make([]int, 0, len(items))
	for i := range items {
		it := &items[i]
		if it.Err != nil {
			continue
		}
		start := len(buf)
		buf = amdp.AppendPacketSigningBytes(buf, it.Packet)
		src := it.Pipe.GetSource()
		sigs = append(sigs, crypto.SigItem{Suite: crypto.Suite(src.GetSuite()), PublicKey: src.GetPublicKey(),
			Message: buf[start:len(buf):len(buf)], Signature: it.Packet.GetSignature()})
		idx = append(idx, i)
	}
	errs := make([]error, len(sigs))
	if crypto.VerifyBatch(sigs, errs, runtime.GOMAXPROCS(0), keys) {
		return
	}
	for j, err := range errs {
		if err != nil {
			it := &items[idx[j]]
			if it.Err = amdp.VerifyPacket(it.Packet, sigs[j].Suite, sigs[j].PublicKey); it.Err == nil {
				// The batch said no and the single check yes: believe
				// the refusal rather than deliver on a disagreement.
				it.Err = fmt.Errorf("%w: %w", amdp.ErrBadSignature, err)
			}
		}
	}
}

// Forged reports whether err, a packet's stage-1 verdict, names no
// verified request: a malformed record, an unknown or misrouted pipe, a
// credential or signature that is not the pipe source's. Such a packet is
// dropped and counted against the party it claims to come from; it is
// never compensated. A refusal by Admissible is not forged.
func Forged(err error) bool {
	var r *Refusal
	return err != nil && !errors.As(err, &r)
}

// Reason is the stable metric label of a verdict: "" for nil, this
// package's label for its sentinels, amdp's (amdp.Reason) otherwise.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrUnknownPipe):
		return "unknown_pipe"
	case errors.Is(err, ErrPipeNotActive):
		return "pipe_not_active"
	case errors.Is(err, ErrWrongSource):
		return "wrong_source"
	case errors.Is(err, ErrWrongDestination):
		return "wrong_destination"
	case errors.Is(err, ErrRevokedKey):
		return "revoked_key"
	}
	return amdp.Reason(err)
}
