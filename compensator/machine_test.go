package compensator

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// t0 is the fixed clock the scripts start from; Save actions print NextAt
// relative to it.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func identity(d time.Duration) time.Duration { return d }

// chainAccepts is the governance chain's rule for exception transitions
// (govchain.ExceptionMove, the rule the chain applies). MANUAL is left only
// through a person's resolution (RESOLVED), which the harness records in
// resolve.
func chainAccepts(from, to govchain.PacketState) bool { return govchain.ExceptionMove(from, to) }

// harness drives a Machine the way the wrapper does (it runs Forget
// actions) and keeps each packet's exception record as the governance
// chain would, failing the test on a transition the chain would refuse.
type harness struct {
	t     *testing.T
	m     *Machine
	items map[string]*Item // by "pipe/seq"
	chain map[[32]byte]govchain.PacketState
}

func newHarness(t *testing.T, p Policy, restored ...*Item) *harness {
	h := &harness{t: t, m: NewMachine(p, restored), items: map[string]*Item{}, chain: map[[32]byte]govchain.PacketState{}}
	for _, it := range restored {
		h.items[name(it)] = it
		h.chain[it.ID] = it.Recorded // what the chain holds for a restored item
	}
	return h
}

func name(it *Item) string { return fmt.Sprintf("%s/%d", it.Pipe, it.Seq) }

func newItem(n, to string) *Item {
	pipe, seq, ok := strings.Cut(n, "/")
	s, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil {
		panic("bad item name " + n)
	}
	return &Item{ID: amdp.PacketID(pipe, s), Pipe: pipe, Seq: s, To: to, Packet: []byte("packet " + n)}
}

// list returns the named items ("a/1 b/2"), made for destination to on
// first use.
func (h *harness) list(to, names string) []*Item {
	var out []*Item
	for _, n := range strings.Fields(names) {
		it, ok := h.items[n]
		if !ok {
			it = newItem(n, to)
			h.items[n] = it
		}
		out = append(out, it)
	}
	return out
}

// proved hands the machine the wrapper's checks: one verdict for the named
// items, with reason.
func (h *harness) proved(v Verdict, names, reason string, now time.Time) []Action {
	var proofs []Proof
	for _, it := range h.list("", names) {
		proofs = append(proofs, Proof{Item: it, Verdict: v, Reason: reason, Counts: true})
	}
	return h.m.Proved(proofs, now)
}

// resolve records a person's decision on chain (MsgResolve: MANUAL to
// RESOLVED) and hands it to the machine.
func (h *harness) resolve(n, action string) []Action {
	h.t.Helper()
	it := h.items[n]
	if st := h.chain[it.ID]; st != govchain.PacketState_PACKET_MANUAL {
		h.t.Errorf("resolve %s: chain has it in %s, only MANUAL is resolved", n, short(st))
	}
	h.chain[it.ID] = govchain.PacketState_PACKET_RESOLVED
	return h.m.Resolved(it.ID, action)
}

// apply renders acts, then carries them out: Record moves the chain's
// record (checked), Forget drops the items from the machine.
func (h *harness) apply(acts []Action) []string {
	h.t.Helper()
	out := h.render(acts)
	for _, a := range acts {
		switch a.Kind {
		case Record:
			for _, it := range a.Items {
				if from := h.chain[it.ID]; !chainAccepts(from, a.State) {
					h.t.Errorf("%s: the governance chain refuses %s -> %s", name(it), short(from), short(a.State))
				}
				h.chain[it.ID] = a.State
			}
			h.m.Recorded(a.Items, a.State) // as the wrapper does once the chain answered
		case Forget:
			h.m.Forget(a.Items)
		}
	}
	return out
}

func short(s govchain.PacketState) string {
	if s == govchain.PacketState_PACKET_STATE_UNSPECIFIED {
		return "none"
	}
	return strings.TrimPrefix(s.String(), "PACKET_")
}

func names(items []*Item) string {
	var b strings.Builder
	for i, it := range items {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(name(it))
	}
	return b.String()
}

// detail prints an item's saved state: a/1{FAILED n=0 next=+1s}.
func detail(items []*Item) string {
	var b strings.Builder
	for i, it := range items {
		if i > 0 {
			b.WriteByte(' ')
		}
		next := "-"
		if !it.NextAt.IsZero() {
			next = "+" + it.NextAt.Sub(t0).String()
		}
		fmt.Fprintf(&b, "%s{%s n=%d next=%s", name(it), short(it.State), it.Attempts, next)
		if it.Proving {
			fmt.Fprintf(&b, " proving %s", it.Evidence)
		}
		if it.RollingBack {
			b.WriteString(" rolling back")
		}
		b.WriteByte('}')
	}
	return b.String()
}

func (h *harness) render(acts []Action) []string {
	h.t.Helper()
	var out []string
	for _, a := range acts {
		switch a.Kind {
		case Record:
			out = append(out, fmt.Sprintf("Record %s %s: %s", short(a.State), names(a.Items), a.Reason))
		case Rollback:
			out = append(out, fmt.Sprintf("Rollback %s: %s", names(a.Items), a.Reason))
		case Resend:
			for _, it := range a.Items {
				if it.To != a.Items[0].To {
					h.t.Errorf("one Resend for destinations %s and %s", a.Items[0].To, it.To)
				}
			}
			if !slices.IsSortedFunc(a.Items, cmpItem) {
				h.t.Errorf("Resend items not by (pipe, seq): %s", names(a.Items))
			}
			out = append(out, fmt.Sprintf("Resend %s -> %s", names(a.Items), a.Items[0].To))
		case Forget:
			out = append(out, "Forget "+names(a.Items))
		case Save:
			out = append(out, "Save "+detail(a.Items))
		case Prove:
			out = append(out, fmt.Sprintf("Prove %s: %s", names(a.Items), a.Reason))
		default:
			h.t.Errorf("unknown action kind %d", a.Kind)
		}
	}
	return out
}

func cmpItem(x, y *Item) int {
	if c := strings.Compare(x.Pipe, y.Pipe); c != 0 {
		return c
	}
	return cmp.Compare(x.Seq, y.Seq)
}

type step struct {
	do   func(h *harness) []Action
	want []string
}

func TestMachine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		policy  Policy
		restore func() []*Item // the store's items at start
		steps   []step
		held    string // detail of Items() at the end
	}{
		{
			name:   "refused: failed, proven, then rolled back and forgotten; never resent meanwhile",
			policy: Policy{Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Refused(h.list("y", "a/2 a/1"), "contract reverted") },
					want: []string{
						"Save a/2{FAILED n=0 next=- proving } a/1{FAILED n=0 next=- proving }",
						"Record FAILED a/2 a/1: contract reverted",
						"Prove a/2 a/1: contract reverted",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Due(at(time.Hour)) },
					want: nil, // the proof is under way: no resend, no second proof
				},
				{
					do: func(h *harness) []Action { return h.proved(ProofHolds, "a/2 a/1", "refused on chain", t0) },
					want: []string{
						"Save a/2{FAILED n=0 next=- rolling back}",
						"Rollback a/2: refused on chain",
						"Record ROLLED_BACK a/2: refused on chain",
						"Forget a/2",
						"Save a/1{FAILED n=0 next=- rolling back}",
						"Rollback a/1: refused on chain",
						"Record ROLLED_BACK a/1: refused on chain",
						"Forget a/1",
					},
				},
			},
		},
		{
			name:   "refusal contradicted: MANUAL, never rolled back",
			policy: Policy{Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Refused(h.list("y", "a/1"), "refused") },
					want: []string{
						"Save a/1{FAILED n=0 next=- proving }",
						"Record FAILED a/1: refused",
						"Prove a/1: refused",
					},
				},
				{
					do: func(h *harness) []Action {
						return h.proved(ProofContradicted, "a/1", "the destination chain executed it", t0)
					},
					want: []string{
						"Record MANUAL a/1: the destination chain executed it",
						"Save a/1{MANUAL n=0 next=-}",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Due(at(time.Hour)) },
					want: nil,
				},
			},
			held: "a/1{MANUAL n=0 next=-}",
		},
		{
			name:   "evidence out of reach: checked again with backoff, then MANUAL",
			policy: Policy{MaxProofAttempts: 2, Base: time.Second, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Refused(h.list("y", "a/1"), "refused") },
					want: []string{
						"Save a/1{FAILED n=0 next=- proving }",
						"Record FAILED a/1: refused",
						"Prove a/1: refused",
					},
				},
				{
					do:   func(h *harness) []Action { return h.proved(ProofPending, "a/1", "chain down", t0) },
					want: []string{"Save a/1{FAILED n=0 next=+2s proving }"},
				},
				{
					do:   func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: nil,
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(2 * time.Second)) },
					want: []string{
						"Save a/1{FAILED n=0 next=+2s proving }",
						"Prove a/1: timed out before delivery",
					},
				},
				{
					do: func(h *harness) []Action { return h.proved(ProofPending, "a/1", "chain down", at(2*time.Second)) },
					want: []string{
						"Record MANUAL a/1: evidence could not be checked: chain down",
						"Save a/1{MANUAL n=0 next=+2s}",
					},
				},
			},
			held: "a/1{MANUAL n=0 next=+2s}",
		},
		{
			name:   "timeout: proven not executed, or found executed",
			policy: Policy{Base: time.Second, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action {
						items := h.list("y", "a/1 a/2")
						for _, it := range items {
							it.Deadline = at(500 * time.Millisecond)
						}
						return h.m.Undelivered(items, "unreachable", t0)
					},
					want: []string{
						"Record FAILED a/1 a/2: unreachable",
						"Save a/1{FAILED n=0 next=+1s} a/2{FAILED n=0 next=+1s}",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Save a/1{FAILED n=0 next=+1s proving timeout} a/2{FAILED n=0 next=+1s proving timeout}",
						"Prove a/1 a/2: timed out before delivery",
					},
				},
				{
					do: func(h *harness) []Action {
						return append(h.proved(ProofHolds, "a/1", "not executed by height 9", at(time.Second)),
							h.proved(ProofExecuted, "a/2", "executed at height 7", at(time.Second))...)
					},
					want: []string{
						"Save a/1{FAILED n=0 next=+1s rolling back}",
						"Rollback a/1: not executed by height 9",
						"Record ROLLED_BACK a/1: not executed by height 9",
						"Forget a/1",
						"Record DELIVERED a/2: executed at height 7",
						"Forget a/2",
					},
				},
			},
		},
		{
			name:   "undelivered: failed, resent after Base, grouped by destination",
			policy: Policy{Base: time.Second, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "b/1 a/2"), "unreachable", t0) },
					want: []string{
						"Record FAILED b/1 a/2: unreachable",
						"Save b/1{FAILED n=0 next=+1s} a/2{FAILED n=0 next=+1s}",
					},
				},
				{
					do: func(h *harness) []Action {
						return h.m.Undelivered(h.list("x", "a/1"), "unreachable", at(500*time.Millisecond))
					},
					want: []string{
						"Record FAILED a/1: unreachable",
						"Save a/1{FAILED n=0 next=+1.5s}",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Due(at(time.Second - time.Nanosecond)) },
					want: nil,
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Record RETRYING a/2 b/1: resending",
						"Save a/2{RETRYING n=1 next=-} b/1{RETRYING n=1 next=-}",
						"Resend a/2 b/1 -> y",
					},
				},
				{
					do: func(h *harness) []Action {
						return h.m.Resent(h.list("", "a/2 b/1"), nil, nil, "", at(time.Second))
					},
					want: []string{
						"Record DELIVERED a/2 b/1: delivered on retry",
						"Forget a/2 b/1",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Due(at(1500*time.Millisecond - time.Nanosecond)) },
					want: nil,
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(1500 * time.Millisecond)) },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=1 next=-}",
						"Resend a/1 -> x",
					},
				},
			},
			held: "a/1{RETRYING n=1 next=-}",
		},
		{
			name:   "due groups every destination in one call, sorted by destination",
			policy: Policy{Base: time.Second, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action {
						acts := h.m.Undelivered(h.list("z", "c/1"), "down", t0)
						acts = append(acts, h.m.Undelivered(h.list("x", "b/2 b/1"), "down", t0)...)
						return append(acts, h.m.Undelivered(h.list("y", "a/1"), "down", t0)...)
					},
					want: []string{
						"Record FAILED c/1: down",
						"Save c/1{FAILED n=0 next=+1s}",
						"Record FAILED b/2 b/1: down",
						"Save b/2{FAILED n=0 next=+1s} b/1{FAILED n=0 next=+1s}",
						"Record FAILED a/1: down",
						"Save a/1{FAILED n=0 next=+1s}",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Minute)) },
					want: []string{
						"Record RETRYING b/1 b/2: resending",
						"Save b/1{RETRYING n=1 next=-} b/2{RETRYING n=1 next=-}",
						"Resend b/1 b/2 -> x",
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=1 next=-}",
						"Resend a/1 -> y",
						"Record RETRYING c/1: resending",
						"Save c/1{RETRYING n=1 next=-}",
						"Resend c/1 -> z",
					},
				},
			},
			held: "a/1{RETRYING n=1 next=-} b/1{RETRYING n=1 next=-} b/2{RETRYING n=1 next=-} c/1{RETRYING n=1 next=-}",
		},
		{
			name:   "failed resends back off exponentially, capped at Max, then MANUAL",
			policy: Policy{MaxAttempts: 3, Base: time.Second, Max: 3 * time.Second, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1: unreachable",
						"Save a/1{FAILED n=0 next=+1s}",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=1 next=-}",
						"Resend a/1 -> y",
					},
				},
				{
					// attempt 1 failed: wait Base<<1
					do:   func(h *harness) []Action { return h.m.Resent(nil, nil, h.list("", "a/1"), "timeout", at(time.Second)) },
					want: []string{"Save a/1{RETRYING n=1 next=+3s}"},
				},
				{
					do:   func(h *harness) []Action { return h.m.Due(at(3*time.Second - 1)) },
					want: nil,
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(3 * time.Second)) },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=2 next=-}",
						"Resend a/1 -> y",
					},
				},
				{
					// attempt 2 failed: Base<<2 = 4s, capped at 3s
					do: func(h *harness) []Action {
						return h.m.Resent(nil, nil, h.list("", "a/1"), "timeout", at(3*time.Second))
					},
					want: []string{"Save a/1{RETRYING n=2 next=+6s}"},
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(6 * time.Second)) },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=3 next=-}",
						"Resend a/1 -> y",
					},
				},
				{
					// attempt 3 (= MaxAttempts) failed: a person decides
					do: func(h *harness) []Action {
						return h.m.Resent(nil, nil, h.list("", "a/1"), "timeout", at(6*time.Second))
					},
					want: []string{
						"Record MANUAL a/1: retry budget spent: timeout",
						"Save a/1{MANUAL n=3 next=-}",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Due(at(time.Hour)) },
					want: nil,
				},
			},
			held: "a/1{MANUAL n=3 next=-}",
		},
		{
			name:   "backoff cap holds for large attempt counts",
			policy: Policy{MaxAttempts: 100, Base: time.Second, Max: 30 * time.Second, Jitter: identity},
			restore: func() []*Item {
				var out []*Item
				for _, n := range []int{34, 40, 63, 64, 70} { // Base<<n overflows
					it := newItem(fmt.Sprint("a/", n), "y")
					it.State, it.Attempts = govchain.PacketState_PACKET_RETRYING, n
					out = append(out, it)
				}
				return out
			},
			steps: []step{{
				do: func(h *harness) []Action {
					return h.m.Resent(nil, nil, h.list("", "a/34 a/40 a/63 a/64 a/70"), "timeout", t0)
				},
				want: []string{"Save a/34{RETRYING n=34 next=+30s} a/40{RETRYING n=40 next=+30s} " +
					"a/63{RETRYING n=63 next=+30s} a/64{RETRYING n=64 next=+30s} a/70{RETRYING n=70 next=+30s}"},
			}},
			held: "a/34{RETRYING n=34 next=+30s} a/40{RETRYING n=40 next=+30s} " +
				"a/63{RETRYING n=63 next=+30s} a/64{RETRYING n=64 next=+30s} a/70{RETRYING n=70 next=+30s}",
		},
		{
			name:   "jitter maps the backoff to the wait",
			policy: Policy{Base: 4 * time.Second, Jitter: func(d time.Duration) time.Duration { return d / 4 }},
			steps: []step{{
				do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1"), "unreachable", t0) },
				want: []string{
					"Record FAILED a/1: unreachable",
					"Save a/1{FAILED n=0 next=+1s}",
				},
			}},
			held: "a/1{FAILED n=0 next=+1s}",
		},
		{
			name:   "zero policy: 3 attempts from 1s",
			policy: Policy{},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1: unreachable",
						"Save a/1{FAILED n=0 next=+1s}",
					},
				},
				{
					do: func(h *harness) []Action {
						it := h.items["a/1"]
						it.Attempts, it.NextAt = 3, time.Time{} // as after a third resend
						it.State = govchain.PacketState_PACKET_RETRYING
						h.chain[it.ID] = govchain.PacketState_PACKET_RETRYING
						return h.m.Resent(nil, nil, []*Item{it}, "timeout", t0)
					},
					want: []string{
						"Record MANUAL a/1: retry budget spent: timeout",
						"Save a/1{MANUAL n=3 next=-}",
					},
				},
			},
			held: "a/1{MANUAL n=3 next=-}",
		},
		{
			name:   "MaxAttempts < 0 means none: straight to MANUAL",
			policy: Policy{MaxAttempts: -1, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1 a/2"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1 a/2: unreachable",
						"Record MANUAL a/1 a/2: retry budget spent: unreachable",
						"Save a/1{MANUAL n=0 next=-} a/2{MANUAL n=0 next=-}",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Due(at(time.Hour)) },
					want: nil,
				},
			},
			held: "a/1{MANUAL n=0 next=-} a/2{MANUAL n=0 next=-}",
		},
		{
			name:   "resent: delivered, refused and failed in one outcome",
			policy: Policy{Base: time.Second, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1 a/2 a/3"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1 a/2 a/3: unreachable",
						"Save a/1{FAILED n=0 next=+1s} a/2{FAILED n=0 next=+1s} a/3{FAILED n=0 next=+1s}",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Record RETRYING a/1 a/2 a/3: resending",
						"Save a/1{RETRYING n=1 next=-} a/2{RETRYING n=1 next=-} a/3{RETRYING n=1 next=-}",
						"Resend a/1 a/2 a/3 -> y",
					},
				},
				{
					do: func(h *harness) []Action {
						return h.m.Resent(h.list("", "a/1"), h.list("", "a/2"), h.list("", "a/3"), "refused by the destination: reverted", at(2*time.Second))
					},
					want: []string{
						"Record DELIVERED a/1: delivered on retry",
						"Forget a/1",
						"Save a/2{FAILED n=1 next=- proving }",
						"Record FAILED a/2: refused by the destination: reverted",
						"Prove a/2: refused by the destination: reverted",
						"Save a/3{RETRYING n=1 next=+4s}",
					},
				},
			},
			held: "a/2{FAILED n=1 next=- proving } a/3{RETRYING n=1 next=+4s}",
		},
		{
			name:   "resent delivered: recorded and forgotten",
			policy: Policy{Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1 a/2"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1 a/2: unreachable",
						"Save a/1{FAILED n=0 next=+1s} a/2{FAILED n=0 next=+1s}",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Record RETRYING a/1 a/2: resending",
						"Save a/1{RETRYING n=1 next=-} a/2{RETRYING n=1 next=-}",
						"Resend a/1 a/2 -> y",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Resent(h.list("", "a/1 a/2"), nil, nil, "", at(time.Second)) },
					want: []string{
						"Record DELIVERED a/1 a/2: delivered on retry",
						"Forget a/1 a/2",
					},
				},
			},
		},
		{
			name:   "resent refused: rolled back and forgotten",
			policy: Policy{Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1: unreachable",
						"Save a/1{FAILED n=0 next=+1s}",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=1 next=-}",
						"Resend a/1 -> y",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Resent(nil, h.list("", "a/1"), nil, "refused", at(time.Second)) },
					want: []string{
						"Save a/1{FAILED n=1 next=- proving }",
						"Record FAILED a/1: refused",
						"Prove a/1: refused",
					},
				},
				{
					do: func(h *harness) []Action { return h.proved(ProofHolds, "a/1", "refused on chain", at(time.Second)) },
					want: []string{
						"Save a/1{FAILED n=1 next=- rolling back}",
						"Rollback a/1: refused on chain",
						"Record ROLLED_BACK a/1: refused on chain",
						"Forget a/1",
					},
				},
			},
		},
		{
			name:   "resolved retry: resent with attempts reset, then delivered",
			policy: Policy{MaxAttempts: 2, Base: time.Second, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1: unreachable",
						"Save a/1{FAILED n=0 next=+1s}",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=1 next=-}",
						"Resend a/1 -> y",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Resent(nil, nil, h.list("", "a/1"), "timeout", at(time.Second)) },
					want: []string{"Save a/1{RETRYING n=1 next=+3s}"},
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(3 * time.Second)) },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=2 next=-}",
						"Resend a/1 -> y",
					},
				},
				{
					do: func(h *harness) []Action {
						return h.m.Resent(nil, nil, h.list("", "a/1"), "timeout", at(3*time.Second))
					},
					want: []string{
						"Record MANUAL a/1: retry budget spent: timeout",
						"Save a/1{MANUAL n=2 next=-}",
					},
				},
				{
					do: func(h *harness) []Action { return h.resolve("a/1", "retry") },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=1 next=-}",
						"Resend a/1 -> y",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Resent(h.list("", "a/1"), nil, nil, "", at(time.Minute)) },
					want: []string{
						"Record DELIVERED a/1: delivered on retry",
						"Forget a/1",
					},
				},
			},
		},
		{
			name:   "resolved retry fails again: back to MANUAL through the budget",
			policy: Policy{MaxAttempts: -1, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1: unreachable",
						"Record MANUAL a/1: retry budget spent: unreachable",
						"Save a/1{MANUAL n=0 next=-}",
					},
				},
				{
					do: func(h *harness) []Action { return h.resolve("a/1", "retry") },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=1 next=-}",
						"Resend a/1 -> y",
					},
				},
				{
					do: func(h *harness) []Action { return h.m.Resent(nil, nil, h.list("", "a/1"), "timeout", t0) },
					want: []string{
						"Record MANUAL a/1: retry budget spent: timeout",
						"Save a/1{MANUAL n=1 next=-}",
					},
				},
				{
					do: func(h *harness) []Action { return h.resolve("a/1", "rollback") },
					want: []string{
						"Save a/1{RESOLVED n=1 next=- rolling back}",
						"Rollback a/1: resolved: rollback",
						"Record ROLLED_BACK a/1: resolved: rollback",
						"Forget a/1",
					},
				},
			},
		},
		{
			name:   "resolved rollback and accept",
			policy: Policy{MaxAttempts: -1, Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1 a/2 a/3"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1 a/2 a/3: unreachable",
						"Record MANUAL a/1 a/2 a/3: retry budget spent: unreachable",
						"Save a/1{MANUAL n=0 next=-} a/2{MANUAL n=0 next=-} a/3{MANUAL n=0 next=-}",
					},
				},
				{
					do: func(h *harness) []Action { return h.resolve("a/1", "rollback") },
					want: []string{
						"Save a/1{RESOLVED n=0 next=- rolling back}",
						"Rollback a/1: resolved: rollback",
						"Record ROLLED_BACK a/1: resolved: rollback",
						"Forget a/1",
					},
				},
				{
					do:   func(h *harness) []Action { return h.resolve("a/2", "accept") },
					want: []string{"Forget a/2"},
				},
				{
					// already carried out: a second poll of the same resolution
					do:   func(h *harness) []Action { return h.m.Resolved(h.items["a/2"].ID, "accept") },
					want: nil,
				},
			},
			held: "a/3{MANUAL n=0 next=-}",
		},
		{
			name:   "resolved on an unknown packet or one not in MANUAL: nothing",
			policy: Policy{Jitter: identity},
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Undelivered(h.list("y", "a/1"), "unreachable", t0) },
					want: []string{
						"Record FAILED a/1: unreachable",
						"Save a/1{FAILED n=0 next=+1s}",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Resolved(amdp.PacketID("nobody", 9), "retry") },
					want: nil,
				},
				{
					do:   func(h *harness) []Action { return h.m.Resolved(h.items["a/1"].ID, "rollback") },
					want: nil,
				},
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Record RETRYING a/1: resending",
						"Save a/1{RETRYING n=1 next=-}",
						"Resend a/1 -> y",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Resolved(h.items["a/1"].ID, "retry") },
					want: nil,
				},
			},
			held: "a/1{RETRYING n=1 next=-}",
		},
		{
			// TestKillSourceRelayCompensating found it: the chain takes no
			// move from nothing to ROLLED_BACK or RETRYING, so a rollback
			// made without the FAILED record was refused on governance
			// while the source chain's rollback stood.
			name:    "restored before their first record: FAILED recorded before the proof and before the resend",
			policy:  Policy{Jitter: identity},
			restore: unrecordedItems,
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Record FAILED r/1: refused at the source relay: pipe_not_active",
						"Save r/1{FAILED n=0 next=- proving source_refusal}",
						"Prove r/1: timed out before delivery",
						"Record FAILED u/1: destination relay unreachable",
						"Record RETRYING u/1: resending",
						"Save u/1{RETRYING n=1 next=-}",
						"Resend u/1 -> y",
					},
				},
				{
					do: func(h *harness) []Action {
						return h.m.Proved([]Proof{{Item: h.items["r/1"], Verdict: ProofHolds, Reason: "suspended on chain"}}, at(2*time.Second))
					},
					want: []string{
						"Save r/1{FAILED n=0 next=- rolling back}",
						"Rollback r/1: suspended on chain",
						"Record ROLLED_BACK r/1: suspended on chain",
						"Forget r/1",
					},
				},
				{
					// Recorded now: a later check does not record again.
					do:   func(h *harness) []Action { return h.m.Due(at(3 * time.Second)) },
					want: nil,
				},
			},
			held: "u/1{RETRYING n=1 next=-}",
		},
		{
			// Found by FuzzCompensator's kills: each step of a final
			// sequence can be the last before a kill -9.
			name:    "restored between the steps of a final sequence: finished, never proved or resent again",
			policy:  Policy{Jitter: identity},
			restore: midSequenceItems,
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Forget d/1 k/1",
						"Rollback r/1: refused on chain",
						"Record ROLLED_BACK r/1: refused on chain",
						"Forget r/1",
					},
				},
				{
					do:   func(h *harness) []Action { return h.m.Due(at(time.Minute)) },
					want: nil,
				},
			},
			held: "m/1{MANUAL n=1 next=+0s}",
		},
		{
			name:    "restored items: due ones resent, MANUAL ones resolvable",
			policy:  Policy{Jitter: identity},
			restore: restoredItems,
			steps: []step{
				{
					do: func(h *harness) []Action { return h.m.Due(at(time.Second)) },
					want: []string{
						"Record RETRYING a/1 b/1: resending",
						"Save a/1{RETRYING n=1 next=-} b/1{RETRYING n=2 next=-}",
						"Resend a/1 b/1 -> y",
					},
				},
				{
					do:   func(h *harness) []Action { return h.resolve("a/2", "accept") },
					want: []string{"Forget a/2"},
				},
			},
			held: "a/1{RETRYING n=1 next=-} b/1{RETRYING n=2 next=-} c/1{FAILED n=0 next=+1h0m0s}",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var restored []*Item
			if tc.restore != nil {
				restored = tc.restore()
			}
			h := newHarness(t, tc.policy, restored...)
			for i, s := range tc.steps {
				if got := h.apply(s.do(h)); !slices.Equal(got, s.want) {
					t.Fatalf("step %d:\n got %s\nwant %s", i, strings.Join(got, "\n     "), strings.Join(s.want, "\n     "))
				}
			}
			if got := detail(h.m.Items()); got != tc.held {
				t.Errorf("held at the end:\n got %s\nwant %s", got, tc.held)
			}
		})
	}
}

// restoredItems are what a store might hold after a restart, in no order.
func restoredItems() []*Item {
	c1 := newItem("c/1", "z")
	c1.State, c1.NextAt = govchain.PacketState_PACKET_FAILED, at(time.Hour)
	b1 := newItem("b/1", "y")
	b1.State, b1.Attempts, b1.NextAt = govchain.PacketState_PACKET_RETRYING, 1, at(time.Second)
	a2 := newItem("a/2", "y")
	a2.State, a2.Attempts = govchain.PacketState_PACKET_MANUAL, 3
	a1 := newItem("a/1", "y")
	a1.State, a1.NextAt = govchain.PacketState_PACKET_FAILED, t0
	items := []*Item{c1, b1, a2, a1}
	for _, it := range items {
		it.Recorded = it.State // stored after their records were made
	}
	return items
}

// midSequenceItems were stored by a process killed inside a final
// sequence: after its rollback was decided (r/1), after its delivery was
// recorded (d/1, resent) or its rollback (k/1), after its MANUAL record
// (m/1) but before their next store.
func midSequenceItems() []*Item {
	r := newItem("r/1", "y")
	r.State, r.Recorded, r.RollingBack, r.Reason = govchain.PacketState_PACKET_FAILED, govchain.PacketState_PACKET_FAILED, true, "refused on chain"
	d := newItem("d/1", "y")
	d.State, d.Attempts, d.Recorded = govchain.PacketState_PACKET_RETRYING, 1, govchain.PacketState_PACKET_DELIVERED
	k := newItem("k/1", "y")
	k.State, k.Proving, k.Recorded, k.RollingBack = govchain.PacketState_PACKET_FAILED, false, govchain.PacketState_PACKET_ROLLED_BACK, true
	m := newItem("m/1", "y")
	m.State, m.Attempts, m.NextAt, m.Recorded = govchain.PacketState_PACKET_RETRYING, 1, t0, govchain.PacketState_PACKET_MANUAL
	return []*Item{r, d, k, m}
}

// unrecordedItems were stored and then the process was killed before
// their first record reached the governance chain: a refusal waiting for
// its proof, and a batch the router could not deliver.
func unrecordedItems() []*Item {
	r := newItem("r/1", "y")
	r.State, r.Proving, r.Evidence, r.Reason = govchain.PacketState_PACKET_FAILED, true, EvidenceSourceRefusal, "refused at the source relay: pipe_not_active"
	u := newItem("u/1", "y")
	u.State, u.NextAt, u.Reason = govchain.PacketState_PACKET_FAILED, t0, "destination relay unreachable"
	return []*Item{r, u}
}

func TestMachineRestore(t *testing.T) {
	m := NewMachine(Policy{Jitter: identity}, restoredItems())
	if got, want := detail(m.Items()), "a/1{FAILED n=0 next=+0s} a/2{MANUAL n=3 next=-} "+
		"b/1{RETRYING n=1 next=+1s} c/1{FAILED n=0 next=+1h0m0s}"; got != want {
		t.Errorf("Items:\n got %s\nwant %s", got, want)
	}
	if got := NewMachine(Policy{}, nil).Items(); len(got) != 0 {
		t.Errorf("empty machine holds %s", detail(got))
	}
	// Items sorts by (pipe, seq): seq numerically, pipe as a string.
	var items []*Item
	for _, n := range []string{"b/10", "a/2", "b/9", "a/10", "ab/1"} {
		items = append(items, newItem(n, "y"))
	}
	if got, want := names(NewMachine(Policy{}, items).Items()), "a/2 a/10 ab/1 b/9 b/10"; got != want {
		t.Errorf("Items order: got %s, want %s", got, want)
	}
}

// TestMachineInFlight checks that a resend under way is not started again:
// between Due and Resent the items are in flight (NextAt zero), and the
// wrapper calls Due on every tick, including while a step of the resend's
// action sequence (Record RETRYING on the governance chain) is being
// retried.
func TestMachineInFlight(t *testing.T) {
	h := newHarness(t, Policy{Base: time.Second, Jitter: identity})
	h.apply(h.m.Undelivered(h.list("y", "a/1"), "unreachable", t0))
	if got := h.apply(h.m.Due(at(time.Second))); len(got) != 3 {
		t.Fatalf("first Due: %s", got)
	}
	if got := h.apply(h.m.Due(at(time.Second + 200*time.Millisecond))); got != nil {
		t.Errorf("Due while the resend is in flight:\n got %s\nwant nothing", strings.Join(got, "\n     "))
	}
	if got, want := detail(h.m.Items()), "a/1{RETRYING n=1 next=-}"; got != want {
		t.Errorf("held: got %s, want %s", got, want)
	}
}

// TestMachineDeadline: a packet whose own timeout passes while it waits
// for a resend is neither retried nor rolled back at once: its
// non-execution is proven first (Prove); one still in time is resent.
func TestMachineDeadline(t *testing.T) {
	m := NewMachine(Policy{Base: time.Second, Jitter: func(d time.Duration) time.Duration { return d }}, nil)
	late := &Item{ID: [32]byte{1}, Pipe: "a", Seq: 1, To: "r", Deadline: t0.Add(500 * time.Millisecond)}
	fine := &Item{ID: [32]byte{2}, Pipe: "a", Seq: 2, To: "r", Deadline: t0.Add(time.Hour)}
	m.Undelivered([]*Item{late, fine}, "unreachable", t0)
	m.Recorded([]*Item{late, fine}, govchain.PacketState_PACKET_FAILED) // its Record ran
	acts := m.Due(t0.Add(time.Second))
	if len(acts) != 5 || acts[0].Kind != Save || acts[1].Kind != Prove || acts[1].Items[0] != late || !late.Proving ||
		late.Evidence != EvidenceTimeout || acts[4].Kind != Resend || len(acts[4].Items) != 1 || acts[4].Items[0] != fine {
		t.Fatalf("actions: %+v", acts)
	}
	for _, a := range acts {
		if a.Kind == Rollback {
			t.Fatal("rolled back on the source's clock alone")
		}
	}
}

// TestMachineResendBatches: a destination's due items go out in batches
// within the policy's count and byte bounds, each with its own record.
func TestMachineResendBatches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p       Policy
		n, size int
		want    []int // items per resent batch
	}{
		{"under the bounds", Policy{MaxResendPackets: 1000}, 10, 10, []int{10}},
		{"by count", Policy{MaxResendPackets: 1000}, 2500, 10, []int{1000, 1000, 500}},
		{"by bytes", Policy{MaxResendPackets: 1000, MaxResendBytes: 4096}, 10, 1000, []int{4, 4, 2}},
		{"one packet over the byte bound still goes", Policy{MaxResendBytes: 10}, 2, 100, []int{1, 1}},
		{"the defaults: amdp's 4096-packet batch never reached", Policy{}, 5000, 10, []int{1024, 1024, 1024, 1024, 904}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.Jitter = identity
			var items []*Item
			for i := range tc.n {
				it := newItem(fmt.Sprintf("p/%d", i+1), "y")
				it.State, it.Recorded, it.NextAt = govchain.PacketState_PACKET_FAILED, govchain.PacketState_PACKET_FAILED, t0
				it.Packet = make([]byte, tc.size)
				items = append(items, it)
			}
			m := NewMachine(tc.p, items)
			var got []int
			records := 0
			for _, a := range m.Due(at(time.Second)) {
				switch a.Kind {
				case Resend:
					got = append(got, len(a.Items))
				case Record:
					records++
				}
			}
			if !slices.Equal(got, tc.want) || records != len(tc.want) {
				t.Fatalf("resent batches %v with %d records, want %v with one record each", got, records, tc.want)
			}
		})
	}
}
