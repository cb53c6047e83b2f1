package compensator

import (
	"sort"
	"time"

	"github.com/ccgpmesh/ccgp/govchain"
)

// Item is one packet under compensation.
type Item struct {
	ID       [32]byte             `json:"id"`
	Pipe     string               `json:"pipe"`
	Seq      uint64               `json:"seq"`
	To       string               `json:"to"`     // destination relay
	Packet   []byte               `json:"packet"` // encoded amdp.Packet
	State    govchain.PacketState `json:"state"`
	Attempts int                  `json:"attempts"`
	NextAt   time.Time            `json:"next_at"`
	Reason   string               `json:"reason"`
	// Deadline is the packet's own timeout (amdp timeout_unix_ms, which
	// the source app sets per pipe): a packet not delivered by then is
	// proven not executed and rolled back instead of retried. Zero: none.
	Deadline time.Time `json:"deadline"`
	// TimeoutHeight is the packet's timeout_height on the destination
	// chain (0: none).
	TimeoutHeight uint64 `json:"timeout_height,omitempty"`

	// Evidence names what a rollback of this item must be checked against
	// before it happens (DESIGN §5a); set while Proving.
	Evidence Evidence `json:"evidence,omitempty"`
	// Receipt is the destination's receipt refusing the packet (encoded
	// amdp.Receipt), for EvidenceDestRefusal.
	Receipt []byte `json:"receipt,omitempty"`
	// Proving: a rollback waits for its evidence to be checked (a Prove
	// action). A proving item is never resent.
	Proving bool `json:"proving,omitempty"`
	// ProofAttempts counts checks that could not be made (a chain out of
	// reach); past Policy.MaxProofAttempts the item goes to MANUAL.
	ProofAttempts int `json:"proof_attempts,omitempty"`
	// Recorded is the latest state this compensator recorded for the
	// item on the governance chain (UNSPECIFIED: none yet); the wrapper
	// stores the item with it after every record. A kill can come between
	// any two steps, and the store then says where the chain stands:
	//   - stored before its first record (the router commits its offsets
	//     once the store has an item): the chain knows nothing of it and
	//     takes no move from nothing but to FAILED or MANUAL, so a rollback
	//     recorded then was refused while the source chain's rollback
	//     stood (TestKillSourceRelayCompensating). Due records FAILED
	//     first;
	//   - recorded DELIVERED or ROLLED_BACK but not yet forgotten: done;
	//     resent or proved again, its next record was refused by the
	//     chain (DELIVERED -> RETRYING, found by FuzzCompensator's kills).
	//     Due forgets it;
	//   - recorded MANUAL before its MANUAL state was stored: restored as
	//     MANUAL.
	Recorded govchain.PacketState `json:"recorded,omitempty"`
	// RollingBack: its rollback was decided (the evidence held, or a
	// person chose it) and stored before the source chain was asked, so
	// a kill between the rollback and its record finishes the rollback
	// (the source chain takes a second one as a no-op) instead of
	// proving the item again, where a check out of reach could end in
	// MANUAL and a person's retry resend a request already rolled back
	// (found by FuzzCompensator's kills).
	RollingBack bool `json:"rolling_back,omitempty"`
}

// Evidence is the kind of evidence a rollback rests on.
type Evidence string

const (
	// EvidenceSourceRefusal: the source relay's router refused an
	// authentic packet (its signature verified against the pipe's key)
	// because its governance record does not take it (suspended pipe,
	// payload over the pipe's limit).
	EvidenceSourceRefusal Evidence = "source_refusal"
	// EvidenceDestRefusal: the destination relay's receipt refuses the
	// packet; the destination chain must hold the same refusal.
	EvidenceDestRefusal Evidence = "dest_refusal"
	// EvidenceTimeout: the packet's timeout passed; the destination chain
	// must show it refused the packet, or that it did not execute it by a
	// block at or past its timeout.
	EvidenceTimeout Evidence = "timeout"
)

// Verdict is the outcome of checking an item's evidence.
type Verdict int

const (
	// ProofHolds: the evidence holds and governance does not record the
	// packet delivered or confirmed: roll it back.
	ProofHolds Verdict = iota + 1
	// ProofExecuted: the destination chain executed the packet: it is
	// delivered, not to be rolled back.
	ProofExecuted
	// ProofContradicted: the evidence is contradicted or cannot be
	// checked at all (a refusal the destination chain does not hold, a
	// packet governance records as delivered): a person decides, with
	// both records in the reason.
	ProofContradicted
	// ProofPending: the check could not be made now (a chain out of
	// reach, a destination not yet past the timeout): try again later.
	ProofPending
)

// Proof is the wrapper's check of one item's evidence.
type Proof struct {
	Item    *Item
	Verdict Verdict
	Reason  string
	// Counts says whether a pending check counts against the item's
	// proof budget (false while a destination is merely not yet past the
	// timeout: that resolves itself).
	Counts bool
}

// Policy bounds retries.
type Policy struct {
	MaxAttempts int // resends before MANUAL; default 3
	// MaxProofAttempts bounds the evidence checks that could not be made
	// before the item goes to MANUAL; default 20.
	MaxProofAttempts int
	// MaxResendPackets and MaxResendBytes bound one resent batch (1024
	// packets, 4 MiB of encoded packets): a destination's due items go
	// out in as many batches as that takes. One batch of everything due
	// was refused by the receiver past amdp's 4096 packets, and its
	// governance record went past the chain's tx size, under a
	// destination's long outage (found by `ccgp bench --rate` on an
	// overloaded machine).
	MaxResendPackets int
	MaxResendBytes   int
	Base             time.Duration // first backoff; default 1s
	Max              time.Duration // backoff cap; default 30s
	// Jitter maps a backoff to the actual wait (full jitter by default is
	// the wrapper's choice; the core stays deterministic given Jitter).
	Jitter func(time.Duration) time.Duration
}

func (p Policy) withDefaults() Policy {
	if p.MaxAttempts < 0 {
		p.MaxAttempts = 0
	} else if p.MaxAttempts == 0 {
		p.MaxAttempts = 3
	}
	if p.MaxProofAttempts <= 0 {
		p.MaxProofAttempts = 20
	}
	if p.Base <= 0 {
		p.Base = time.Second
	}
	if p.MaxResendPackets <= 0 {
		p.MaxResendPackets = 1024
	}
	if p.MaxResendBytes <= 0 {
		p.MaxResendBytes = 4 << 20
	}
	if p.Max <= 0 {
		p.Max = 30 * time.Second
	}
	if p.Jitter == nil {
		p.Jitter = func(d time.Duration) time.Duration { return d }
	}
	return p
}

// ActionKind says what the wrapper must do.
type ActionKind int

const (
	// Record a transition of Items to State on the governance chain.
	Record ActionKind = iota + 1
	// Rollback the Items' requests on the source chain.
	Rollback
	// Resend the Items (one destination relay) as a new batch.
	Resend
	// Forget the Items: they reached a final state.
	Forget
	// Save the Items' new state to the store.
	Save
	// Prove checks each Item's evidence (DESIGN §5a) and reports the
	// result through Proved. No rollback happens without it.
	Prove
)

// Action is one step for the wrapper.
type Action struct {
	Kind   ActionKind
	Items  []*Item
	State  govchain.PacketState
	Reason string
}

// Machine is the compensator's deterministic core. Not safe for
// concurrent use.
type Machine struct {
	p     Policy
	items map[[32]byte]*Item
	// inflight holds the items a Resend action is out for: Due must not
	// send them again until Resent reports. It is not persisted, so after
	// a restart a packet that was mid-resend is due again (the
	// destination's dedupe makes the second copy harmless).
	inflight map[[32]byte]bool
}

// NewMachine makes a machine holding items (restored from the store).
func NewMachine(p Policy, items []*Item) *Machine {
	m := &Machine{p: p.withDefaults(), items: map[[32]byte]*Item{}, inflight: map[[32]byte]bool{}}
	for _, it := range items {
		if it.Recorded == govchain.PacketState_PACKET_MANUAL && it.State != govchain.PacketState_PACKET_MANUAL &&
			it.State != govchain.PacketState_PACKET_RESOLVED {
			it.State, it.Proving = govchain.PacketState_PACKET_MANUAL, false // killed before its MANUAL was stored
		}
		m.items[it.ID] = it
	}
	return m
}

// done reports whether the chain holds a final record of the item: only
// its Forget is left to do.
func done(it *Item) bool {
	switch it.Recorded {
	case govchain.PacketState_PACKET_DELIVERED, govchain.PacketState_PACKET_ROLLED_BACK, govchain.PacketState_PACKET_CONFIRMED:
		return true
	}
	return false
}

// Items returns the packets under compensation, by (pipe, seq).
func (m *Machine) Items() []*Item {
	out := make([]*Item, 0, len(m.items))
	for _, it := range m.items {
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Pipe < out[j].Pipe || (out[i].Pipe == out[j].Pipe && out[i].Seq < out[j].Seq)
	})
	return out
}

// Refused: stage 1 at the source or the destination refused the items
// (their Evidence says which). They are recorded as failed and their
// evidence is checked (Prove) before anything else happens: a refusal by
// itself rolls nothing back. Until Proved reports, they are never resent.
func (m *Machine) Refused(items []*Item, reason string) []Action {
	reason = clip(reason)
	for _, it := range items {
		it.State, it.Reason = govchain.PacketState_PACKET_FAILED, reason
		it.Proving, it.NextAt = true, time.Time{}
		m.items[it.ID] = it
		m.inflight[it.ID] = true
	}
	return []Action{
		{Kind: Save, Items: items},
		{Kind: Record, Items: items, State: govchain.PacketState_PACKET_FAILED, Reason: reason},
		{Kind: Prove, Items: items, Reason: reason},
	}
}

// Proved takes the wrapper's checks of Prove's items: a rollback for
// those whose evidence holds, a delivery for those the destination chain
// executed, MANUAL for those contradicted or out of proof budget, and a
// later check for the rest.
func (m *Machine) Proved(proofs []Proof, now time.Time) []Action {
	var acts []Action
	var later []*Item
	for _, pr := range proofs {
		it := pr.Item
		if _, ok := m.items[it.ID]; !ok {
			continue // forgotten meanwhile (a person's resolution)
		}
		delete(m.inflight, it.ID)
		reason := clip(pr.Reason)
		one := []*Item{it}
		switch pr.Verdict {
		case ProofHolds:
			acts = append(acts, m.rollback(it, reason)...)
		case ProofExecuted:
			acts = append(acts,
				Action{Kind: Record, Items: one, State: govchain.PacketState_PACKET_DELIVERED, Reason: reason},
				Action{Kind: Forget, Items: one})
		case ProofPending:
			if pr.Counts {
				it.ProofAttempts++
			}
			if it.ProofAttempts >= m.p.MaxProofAttempts {
				acts = append(acts, m.manual(it, "evidence could not be checked: "+reason)...)
				continue
			}
			d := m.p.Base << min(it.ProofAttempts, 16)
			if d > m.p.Max || d <= 0 {
				d = m.p.Max
			}
			it.NextAt = now.Add(m.p.Jitter(d))
			later = append(later, it)
		default: // ProofContradicted, or a verdict this machine does not know
			acts = append(acts, m.manual(it, reason)...)
		}
	}
	if len(later) > 0 {
		acts = append(acts, Action{Kind: Save, Items: later})
	}
	return acts
}

// rollback rolls one item back: decided and stored first (RollingBack),
// then the source chain, then the record.
func (m *Machine) rollback(it *Item, reason string) []Action {
	it.RollingBack, it.Reason, it.Proving = true, reason, false
	one := []*Item{it}
	return []Action{
		{Kind: Save, Items: one},
		{Kind: Rollback, Items: one, Reason: reason},
		{Kind: Record, Items: one, State: govchain.PacketState_PACKET_ROLLED_BACK, Reason: reason},
		{Kind: Forget, Items: one}}
}

// manual puts one item in MANUAL: nothing automatic happens to it again.
func (m *Machine) manual(it *Item, reason string) []Action {
	reason = clip(reason)
	it.State, it.Reason, it.Proving = govchain.PacketState_PACKET_MANUAL, reason, false
	one := []*Item{it}
	return []Action{
		{Kind: Record, Items: one, State: govchain.PacketState_PACKET_MANUAL, Reason: reason},
		{Kind: Save, Items: one}}
}

// Undelivered: the router's send budget is spent for items (one
// destination). They are recorded as failed and scheduled for a resend.
func (m *Machine) Undelivered(items []*Item, reason string, now time.Time) []Action {
	reason = clip(reason)
	acts := []Action{{Kind: Record, Items: items, State: govchain.PacketState_PACKET_FAILED, Reason: reason}}
	for _, it := range items {
		it.State, it.Reason = govchain.PacketState_PACKET_FAILED, reason
		m.items[it.ID] = it
	}
	return append(acts, m.schedule(items, now)...)
}

// schedule plans the next resend of items, or sends them to a person.
func (m *Machine) schedule(items []*Item, now time.Time) []Action {
	var later, manual []*Item
	for _, it := range items {
		if it.Attempts >= m.p.MaxAttempts {
			it.State = govchain.PacketState_PACKET_MANUAL
			manual = append(manual, it)
			continue
		}
		d := m.p.Base << it.Attempts
		if d > m.p.Max || d <= 0 {
			d = m.p.Max
		}
		it.NextAt = now.Add(m.p.Jitter(d))
		later = append(later, it)
	}
	var acts []Action
	if len(manual) > 0 {
		acts = append(acts, Action{Kind: Record, Items: manual, State: govchain.PacketState_PACKET_MANUAL,
			Reason: clip("retry budget spent: " + manual[0].Reason)})
	}
	return append(acts, Action{Kind: Save, Items: append(later, manual...)})
}

// Due checks the evidence of items whose timeout passed (EvidenceTimeout)
// and of proving items whose check is due again (after a restart, or a
// check that could not be made), and resends the retryable items whose
// backoff ended, grouped by destination.
func (m *Machine) Due(now time.Time) []Action {
	groups := map[string][]*Item{}
	var prove, finished, rolling []*Item
	for _, it := range m.Items() {
		retryable := it.State == govchain.PacketState_PACKET_FAILED || it.State == govchain.PacketState_PACKET_RETRYING
		switch {
		case m.inflight[it.ID]:
		case done(it):
			m.inflight[it.ID] = true
			finished = append(finished, it)
		case it.RollingBack:
			// Decided before a kill: finish it, whatever its state.
			m.inflight[it.ID] = true
			rolling = append(rolling, it)
		case !retryable:
		case it.Proving:
			if !it.NextAt.After(now) {
				prove = append(prove, it)
			}
		case !it.Deadline.IsZero() && !now.Before(it.Deadline):
			it.Proving, it.Evidence = true, EvidenceTimeout
			prove = append(prove, it)
		case !it.NextAt.After(now):
			groups[it.To] = append(groups[it.To], it)
		}
	}
	var acts []Action
	if len(finished) > 0 {
		acts = append(acts, Action{Kind: Forget, Items: finished})
	}
	for _, it := range rolling {
		acts = append(acts, m.rollback(it, it.Reason)[1:]...) // stored already
	}
	if len(prove) > 0 {
		for _, it := range prove {
			m.inflight[it.ID] = true
		}
		// The record comes first, in the same sequence: a sequence whose
		// step fails is resumed from that step, so Prove (and a rollback
		// after it) never runs before the chain holds FAILED.
		acts = append(acts, unrecorded(prove)...)
		acts = append(acts, Action{Kind: Save, Items: prove}, Action{Kind: Prove, Items: prove, Reason: "timed out before delivery"})
	}
	return append(acts, m.resend(groups)...)
}

// unrecorded returns, for the items the governance chain holds no state
// for yet (a kill came between their store and their first record), the
// FAILED records to make before anything else, one per reason.
func unrecorded(items []*Item) []Action {
	var acts []Action
	byReason := map[string]int{}
	for _, it := range items {
		if it.Recorded != govchain.PacketState_PACKET_STATE_UNSPECIFIED || it.State != govchain.PacketState_PACKET_FAILED {
			continue
		}
		i, ok := byReason[it.Reason]
		if !ok {
			i = len(acts)
			byReason[it.Reason] = i
			acts = append(acts, Action{Kind: Record, State: govchain.PacketState_PACKET_FAILED, Reason: it.Reason})
		}
		acts[i].Items = append(acts[i].Items, it)
	}
	return acts
}

// Recorded notes that the governance chain took the wrapper's record of
// items in state. It returns the items still held, for the wrapper to
// store: the store must say where the chain stands (Item.Recorded).
func (m *Machine) Recorded(items []*Item, state govchain.PacketState) []*Item {
	var held []*Item
	for _, it := range items {
		if _, ok := m.items[it.ID]; !ok {
			continue
		}
		it.Recorded = state
		held = append(held, it)
	}
	return held
}

func (m *Machine) resend(groups map[string][]*Item) []Action {
	tos := make([]string, 0, len(groups))
	for to := range groups {
		tos = append(tos, to)
	}
	sort.Strings(tos)
	var acts []Action
	for _, to := range tos {
		for _, items := range m.batches(groups[to]) {
			acts = append(acts, m.resendOne(items)...)
		}
	}
	return acts
}

// batches splits one destination's items into resend batches within the
// policy's bounds, in (pipe, seq) order.
func (m *Machine) batches(items []*Item) [][]*Item {
	sort.Slice(items, func(i, j int) bool {
		return items[i].Pipe < items[j].Pipe || (items[i].Pipe == items[j].Pipe && items[i].Seq < items[j].Seq)
	})
	var out [][]*Item
	var cur []*Item
	size := 0
	for _, it := range items {
		if len(cur) > 0 && (len(cur) >= m.p.MaxResendPackets || size+len(it.Packet) > m.p.MaxResendBytes) {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, it)
		size += len(it.Packet)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// resendOne plans the resend of one batch's items.
func (m *Machine) resendOne(items []*Item) []Action {
	acts := unrecorded(items)
	for _, it := range items {
		it.State = govchain.PacketState_PACKET_RETRYING
		it.Attempts++
		it.NextAt = time.Time{}
		m.inflight[it.ID] = true
	}
	return append(acts,
		Action{Kind: Record, Items: items, State: govchain.PacketState_PACKET_RETRYING, Reason: "resending"},
		Action{Kind: Save, Items: items},
		Action{Kind: Resend, Items: items})
}

// Resent reports a resend's outcome for items: delivered, refused by the
// destination (their Evidence and Receipt set: checked before any
// rollback), or failed again (err != "").
func (m *Machine) Resent(delivered, refused, failed []*Item, reason string, now time.Time) []Action {
	for _, l := range [][]*Item{delivered, refused, failed} {
		for _, it := range l {
			delete(m.inflight, it.ID)
		}
	}
	reason = clip(reason)
	var acts []Action
	if len(delivered) > 0 {
		acts = append(acts,
			Action{Kind: Record, Items: delivered, State: govchain.PacketState_PACKET_DELIVERED, Reason: "delivered on retry"},
			Action{Kind: Forget, Items: delivered})
	}
	if len(refused) > 0 {
		// The caller set each item's Evidence and Receipt.
		acts = append(acts, m.Refused(refused, reason)...)
	}
	if len(failed) > 0 {
		for _, it := range failed {
			it.Reason = reason
		}
		acts = append(acts, m.schedule(failed, now)...)
	}
	return acts
}

// Resolved carries out a person's decision on an item in MANUAL.
func (m *Machine) Resolved(id [32]byte, action string) []Action {
	it, ok := m.items[id]
	if !ok || it.State != govchain.PacketState_PACKET_MANUAL {
		return nil
	}
	it.State = govchain.PacketState_PACKET_RESOLVED
	switch action {
	case "retry":
		it.Attempts = 0
		return m.resend(map[string][]*Item{it.To: {it}})
	case "rollback":
		return m.rollback(it, "resolved: rollback")
	default: // accept: the person took responsibility; nothing more to do
		return []Action{{Kind: Forget, Items: []*Item{it}}}
	}
}

// Forget drops items from the machine (after their Forget action ran).
func (m *Machine) Forget(items []*Item) {
	for _, it := range items {
		delete(m.items, it.ID)
		delete(m.inflight, it.ID)
	}
}

// maxReason keeps recorded reasons inside the governance chain's bound
// (256 bytes) whatever prefix an error gets.
const maxReason = 200

func clip(s string) string {
	if len(s) > maxReason {
		return s[:maxReason]
	}
	return s
}
