package compensator

import (
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// FuzzCompensator drives the machine with random sequences of stage-1
// refusals, failed sends, receipts (delivered, refused, failed), evidence
// checks (holds, executed, contradicted, pending), people's resolutions,
// restarts and ticks, carrying out its actions as the wrapper does, and
// checks what must hold whatever happens:
//
//   - no packet is both executed (recorded delivered) and rolled back;
//   - nothing is rolled back but on evidence that held, or a person's
//     decision;
//   - a packet is never resent while its rollback waits for evidence, nor
//     twice at once;
//   - every transition recorded is one the governance chain accepts (a
//     state recorded again is a no-op there);
//   - a packet rolled back and then forgotten is recorded ROLLED_BACK.
//
// A restart is a kill -9 at any action boundary (op 7 says after how many
// more actions): what the store held comes back, as the wrapper stores it
// (the items of an event once the event ran, each Save action, each
// record), and everything else is lost.
func FuzzCompensator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{1, 0, 3, 3, 3, 4, 0, 5, 1, 6, 2, 7, 3})
	f.Add([]byte{2, 2, 2, 3, 0, 4, 1, 3, 3, 5, 2, 9, 9, 9, 4, 3})
	f.Add([]byte{1, 7, 3, 8, 8, 8, 3, 4, 2, 4, 3, 6, 0, 3, 3, 7})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 512 {
			return
		}
		fz := newFuzzer(t)
		for i := 0; i+1 < len(prog); i += 2 {
			fz.step(prog[i], prog[i+1])
		}
		for range 50 { // let time run: what is left must still be consistent
			fz.step(3, 255)
		}
	})
}

type fuzzer struct {
	t   *testing.T
	m   *Machine
	now time.Time
	// What the wrapper holds: items out for a resend, out for a proof.
	resending [][]*Item
	proving   []*Item
	all       map[[32]byte]*Item
	chain     map[[32]byte]govchain.PacketState
	executed  map[[32]byte]bool
	rolled    map[[32]byte]bool
	mayRoll   map[[32]byte]bool // evidence held, or a person decided
	next      uint64
	stored    map[[32]byte]Item   // the store, as the wrapper writes it
	decided   map[[32]byte]string // a person's resolution, as the chain holds it
	killIn    int                 // actions until a kill -9; <0: none due
}

func newFuzzer(t *testing.T) *fuzzer {
	return &fuzzer{t: t, now: t0, m: NewMachine(Policy{MaxAttempts: 2, MaxProofAttempts: 3, Base: time.Second, Max: 4 * time.Second, Jitter: identity}, nil),
		all: map[[32]byte]*Item{}, chain: map[[32]byte]govchain.PacketState{}, executed: map[[32]byte]bool{},
		rolled: map[[32]byte]bool{}, mayRoll: map[[32]byte]bool{}, stored: map[[32]byte]Item{}, decided: map[[32]byte]string{}, killIn: -1}
}

// store writes items as the wrapper's save does.
func (f *fuzzer) store(items []*Item) {
	for _, it := range items {
		f.stored[it.ID] = *it
	}
}

// kill drops what the process held and restarts from the store.
func (f *fuzzer) kill() {
	f.resending, f.proving, f.killIn = nil, nil, -1
	var items []*Item
	for _, c := range f.stored {
		it := c
		items = append(items, &it)
		f.all[it.ID] = &it
	}
	f.m = NewMachine(f.m.p, items)
}

// event runs an event of the machine on items as Compensator.take does:
// the items are stored once the event gave them their state, then its
// actions run.
func (f *fuzzer) event(items []*Item, acts []Action) {
	f.store(items)
	f.apply(acts)
}

func (f *fuzzer) fresh(n int, deadline bool) []*Item {
	var out []*Item
	for range n {
		f.next++
		it := &Item{ID: amdp.PacketID("p", f.next), Pipe: "p", Seq: f.next, To: "dst", Packet: []byte("x")}
		if deadline {
			it.Deadline = f.now.Add(1500 * time.Millisecond)
		}
		f.all[it.ID] = it
		out = append(out, it)
	}
	return out
}

func (f *fuzzer) step(op, arg byte) {
	switch op % 8 {
	case 0: // stage 1 refused authentic packets
		items := f.fresh(int(arg%3)+1, false)
		for _, it := range items {
			it.Evidence = EvidenceSourceRefusal
		}
		f.event(items, f.m.Refused(items, "pipe suspended"))
	case 1: // a batch could not be sent
		items := f.fresh(int(arg%3)+1, arg&4 != 0)
		f.event(items, f.m.Undelivered(items, "unreachable", f.now))
	case 2: // receipts of the router's batch refuse some packets
		items := f.fresh(int(arg%3)+1, false)
		for _, it := range items {
			it.Evidence, it.Receipt = EvidenceDestRefusal, []byte("receipt")
		}
		f.event(items, f.m.Refused(items, "refused by the destination"))
	case 3: // time passes
		f.now = f.now.Add(time.Duration(arg%8) * 250 * time.Millisecond)
		f.apply(f.m.Due(f.now))
	case 4: // a resend returns
		if len(f.resending) == 0 {
			return
		}
		i := int(arg) % len(f.resending)
		items := f.resending[i]
		f.resending = append(f.resending[:i], f.resending[i+1:]...)
		var del, ref, fail []*Item
		for j, it := range items {
			switch (int(arg) + j) % 3 {
			case 0:
				del = append(del, it)
				f.executed[it.ID] = true
			case 1:
				it.Evidence, it.Receipt = EvidenceDestRefusal, []byte("receipt")
				ref = append(ref, it)
			default:
				fail = append(fail, it)
			}
		}
		f.apply(f.m.Resent(del, ref, fail, "outcome", f.now))
	case 5: // a proof returns
		if len(f.proving) == 0 {
			return
		}
		i := int(arg) % len(f.proving)
		it := f.proving[i]
		f.proving = append(f.proving[:i], f.proving[i+1:]...)
		v := Verdict(int(arg>>2)%4 + 1)
		if f.executed[it.ID] && v == ProofHolds {
			v = ProofExecuted // the destination chain's records are consistent
		}
		if v == ProofHolds {
			f.mayRoll[it.ID] = true
		}
		if v == ProofExecuted {
			f.executed[it.ID] = true
		}
		f.apply(f.m.Proved([]Proof{{Item: it, Verdict: v, Reason: "checked", Counts: arg&1 == 0}}, f.now))
	case 6: // a person resolves a MANUAL item
		for _, it := range f.m.Items() {
			if it.State != govchain.PacketState_PACKET_MANUAL {
				continue
			}
			if f.chain[it.ID] == govchain.PacketState_PACKET_RESOLVED {
				// Resolved before a kill: the chain holds the decision, and
				// the wrapper's poll hands the same one over again.
				f.apply(f.m.Resolved(it.ID, f.decided[it.ID]))
				return
			}
			action := []string{"retry", "rollback", "accept"}[int(arg)%3]
			f.chain[it.ID] = govchain.PacketState_PACKET_RESOLVED
			if action == "rollback" {
				if f.executed[it.ID] {
					action = "accept" // a person sees the chain too
				} else {
					f.mayRoll[it.ID] = true
				}
			}
			f.decided[it.ID] = action
			f.apply(f.m.Resolved(it.ID, action))
			return
		}
	case 7: // kill -9, now or after a few more actions
		if f.killIn = int(arg % 6); f.killIn == 0 {
			f.kill()
		}
	}
}

func (f *fuzzer) apply(acts []Action) {
	t := f.t
	for _, a := range acts {
		if f.killIn == 0 {
			f.kill()
			return
		} else if f.killIn > 0 {
			f.killIn--
		}
		switch a.Kind {
		case Record:
			for _, it := range a.Items {
				from := f.chain[it.ID]
				if from == a.State && a.State != govchain.PacketState_PACKET_RETRYING {
					continue // recorded again: the chain takes it and adds nothing
				}
				if !govchain.ExceptionMove(from, a.State) {
					t.Fatalf("%d: governance refuses %v -> %v", it.Seq, from, a.State)
				}
				f.chain[it.ID] = a.State
				if a.State == govchain.PacketState_PACKET_DELIVERED && f.rolled[it.ID] {
					t.Fatalf("%d: recorded delivered after its rollback", it.Seq)
				}
			}
			f.store(f.m.Recorded(a.Items, a.State))
		case Rollback:
			for _, it := range a.Items {
				if !f.mayRoll[it.ID] {
					t.Fatalf("%d: rolled back without evidence or a person's decision", it.Seq)
				}
				if f.executed[it.ID] {
					t.Fatalf("%d: rolled back a packet the destination executed", it.Seq)
				}
				f.rolled[it.ID] = true
			}
		case Resend:
			for _, it := range a.Items {
				if it.Proving {
					t.Fatalf("%d: resent while its rollback waits for evidence", it.Seq)
				}
				for _, out := range f.resending {
					for _, o := range out {
						if o.ID == it.ID {
							t.Fatalf("%d: resent twice at once", it.Seq)
						}
					}
				}
				if f.rolled[it.ID] {
					t.Fatalf("%d: resent after its rollback", it.Seq)
				}
			}
			f.resending = append(f.resending, a.Items)
		case Prove:
			f.proving = append(f.proving, a.Items...)
		case Forget:
			for _, it := range a.Items {
				if f.rolled[it.ID] && f.chain[it.ID] != govchain.PacketState_PACKET_ROLLED_BACK {
					t.Fatalf("%d: forgotten after its rollback, but governance records %v", it.Seq, f.chain[it.ID])
				}
				delete(f.stored, it.ID)
			}
			f.m.Forget(a.Items)
		case Save:
			f.store(a.Items)
		default:
			t.Fatalf("unknown action %v", a.Kind)
		}
	}
}
