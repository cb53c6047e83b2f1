package compensator

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// refusedBy marks it as refused by the destination's receipt r, which its
// rollback must be checked against.
func (it *Item) refusedBy(r *amdp.Receipt) error {
	raw, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("compensator: keep receipt: %w", err)
	}
	it.Evidence, it.Receipt = EvidenceDestRefusal, raw
	return nil
}

// prove checks one item's evidence before its rollback (DESIGN §5a):
//
//  1. the evidence itself: for a destination's refusal, the destination
//     chain must hold the same refusal (status, tx, height); for a
//     timeout, the destination chain must hold a refusal of the packet,
//     or not hold the packet at a block at or past its timeout (read the
//     head first, then look: a packet absent after the head committed was
//     not executed up to it, and the chain never executes a packet past
//     its timeout); a source refusal rests on the router's verification;
//  2. governance: a packet recorded as delivered or confirmed is never
//     rolled back, whatever a relay says.
//
// Nothing here changes any state; Machine.Proved decides.
func (c *Compensator) prove(ctx context.Context, it *Item) Proof {
	pr := c.evidence(ctx, it)
	if pr.Verdict != ProofHolds {
		return pr
	}
	ps, h, err := c.cfg.States.PacketStatus(ctx, it.Pipe, it.Seq)
	if err != nil {
		return Proof{Item: it, Verdict: ProofPending, Counts: true, Reason: "governance record of the packet: " + err.Error()}
	}
	switch st := govchain.DeriveState(ps); st {
	case govchain.PacketState_PACKET_DELIVERED, govchain.PacketState_PACKET_CONFIRMED, govchain.PacketState_PACKET_RESOLVED:
		return Proof{Item: it, Verdict: ProofContradicted,
			Reason: fmt.Sprintf("not rolled back: governance records it %s at height %d; evidence: %s", govchain.EnumName(st.String()), h, pr.Reason)}
	}
	return pr
}

// evidence is step 1 of prove.
func (c *Compensator) evidence(ctx context.Context, it *Item) Proof {
	holds := func(reason string) Proof { return Proof{Item: it, Verdict: ProofHolds, Reason: reason} }
	pending := func(counts bool, f string, a ...any) Proof {
		return Proof{Item: it, Verdict: ProofPending, Counts: counts, Reason: fmt.Sprintf(f, a...)}
	}
	manual := func(f string, a ...any) Proof {
		return Proof{Item: it, Verdict: ProofContradicted, Reason: fmt.Sprintf(f, a...)}
	}
	switch it.Evidence {
	case EvidenceSourceRefusal:
		return holds(it.Reason)

	case EvidenceDestRefusal:
		r, err := decodeReceipt(it.Receipt)
		if err != nil {
			return manual("refusal unproven: the stored receipt does not decode: %v", err)
		}
		dest, ok := c.cfg.Destinations(it.To)
		if !ok {
			return manual("refusal unproven: destination chain of %s not reachable from this relay; receipt: %s", it.To, describeReceipt(r))
		}
		d, found, err := dest.FindDelivery(ctx, it.ID)
		switch {
		case err != nil:
			return pending(true, "destination chain of %s: %v", it.To, err)
		case !found && len(r.DestTxHash) == 0:
			// The relay refused before its chain saw the packet (its
			// own checks): nothing a third party can check, and no
			// claim about the chain that could be false.
			return manual("refusal unproven: %s refused it before its chain: %s", it.To, r.Reason)
		case !found:
			c.offend(it, "false_refusal", "the destination chain holds no record of the refusal; receipt: "+describeReceipt(r))
			return manual("false receipt from %s: the destination chain holds no record of the refusal; receipt: %s", it.To, describeReceipt(r))
		case d.Status == amdp.StatusDelivered:
			c.offend(it, "false_refusal", "the destination chain executed the packet; receipt: "+describeReceipt(r))
			return manual("false receipt from %s: the destination chain executed it at height %d tx %x; receipt: %s", it.To, d.Height, d.TxHash, describeReceipt(r))
		case d.Status != r.Status || d.Height != r.DestHeight || !bytes.Equal(d.TxHash, r.DestTxHash):
			c.offend(it, "false_refusal", "the destination chain's refusal differs from the receipt: "+describeReceipt(r))
			return manual("receipt from %s differs from the destination chain (%s at height %d tx %x); receipt: %s",
				it.To, govchain.EnumName(d.Status.String()), d.Height, d.TxHash, describeReceipt(r))
		}
		return holds(fmt.Sprintf("refused by the destination chain at height %d tx %x: %s", d.Height, d.TxHash, d.Reason))

	case EvidenceTimeout:
		dest, ok := c.cfg.Destinations(it.To)
		if it.To == "" || !ok {
			return manual("timed out, non-execution unproven: destination chain of %q not reachable from this relay", it.To)
		}
		head, err := dest.Head(ctx) // before the lookup: see prove
		if err != nil {
			return pending(true, "destination chain of %s: %v", it.To, err)
		}
		d, found, err := dest.FindDelivery(ctx, it.ID)
		switch {
		case err != nil:
			return pending(true, "destination chain of %s: %v", it.To, err)
		case found && d.Status == amdp.StatusDelivered:
			return Proof{Item: it, Verdict: ProofExecuted,
				Reason: fmt.Sprintf("executed on the destination chain at height %d despite its timeout", d.Height)}
		case found:
			return holds(fmt.Sprintf("refused by the destination chain at height %d tx %x: %s", d.Height, d.TxHash, d.Reason))
		}
		pastHeight := it.TimeoutHeight > 0 && head.Height >= it.TimeoutHeight
		pastTime := !it.Deadline.IsZero() && head.TimeUnixMs >= uint64(it.Deadline.UnixMilli())
		if !pastHeight && !pastTime {
			return pending(false, "destination chain at height %d (block time %s) is not past the timeout yet",
				head.Height, time.UnixMilli(int64(head.TimeUnixMs)).UTC().Format(time.RFC3339Nano))
		}
		return holds(fmt.Sprintf("timed out: not executed on the destination chain by height %d (block time %d ms), at or past its timeout", head.Height, head.TimeUnixMs))
	}
	return manual("no evidence for a rollback (%q)", it.Evidence)
}

// decodeReceipt decodes a receipt this compensator stored: bounded, and
// valid by amdp's rules.
func decodeReceipt(b []byte) (*amdp.Receipt, error) {
	if len(b) > 64<<10 {
		return nil, fmt.Errorf("%d bytes", len(b))
	}
	r := &amdp.Receipt{}
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, err
	}
	return r, r.Validate(amdp.DefaultLimits())
}

func describeReceipt(r *amdp.Receipt) string {
	return fmt.Sprintf("%s at height %d tx %x: %s", govchain.EnumName(r.Status.String()), r.DestHeight, r.DestTxHash, r.Reason)
}

// offend records the destination relay that signed a receipt its chain
// contradicts.
func (c *Compensator) offend(it *Item, reason, detail string) {
	if c.cfg.Offences == nil {
		return
	}
	org := ""
	if c.cfg.RelayOrg != nil {
		org = c.cfg.RelayOrg(it.To)
	}
	r := offence.ForRelay(offence.StageCompensator, reason, it.To, org, detail)
	// The receipt is signed by it.To and contradicted by its chain.
	r.Reporter, r.TimeUnixMs, r.Proven = c.cfg.RelayID, time.Now().UnixMilli(), true
	r.Pipe, r.Seq, r.PacketID, r.Evidence = it.Pipe, it.Seq, hex.EncodeToString(it.ID[:]), it.Receipt
	c.cfg.Offences.Report(r)
}

var _ Finder = subchain.Chain(nil)
