package analytics

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// sanctionNet is an in-process governance node with three genesis orgs,
// each with a relay, and pipes p-2-1 and p-1-2 between org-1 and org-2 and
// p-1-3 from org-1 to org-3; an auditor of org-3 voted in.
type sanctionNet struct {
	t   *testing.T
	c   *govchain.Client
	aud crypto.Signer
}

func startSanctionNet(ctx context.Context, t *testing.T) *sanctionNet {
	t.Helper()
	tn, err := govchain.GenerateTestnet(govchain.TestnetOptions{Dir: t.TempDir(), ChainID: "ccgp-credit-test", Validators: 1,
		GenesisOrgs: 3, BlockInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := govchain.StartNode(ctx, tn.Nodes[0].Home, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Stop() })
	c, err := ln.Client(govchain.WithCommitTimeout(20 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	fp := [32]byte{7}
	var parts []govchain.Participant
	var governors []crypto.Signer
	for _, org := range tn.Orgs {
		parts = append(parts, govchain.Participant{Org: org, Admin: crypto.DevSigner("gov-" + org), Relay: "relay-" + org,
			Address: "127.0.0.1:7001", TLSCert: fp[:], RelayKey: crypto.DevSigner("relay-" + org), Subchain: "chain-" + org,
			Kind: "simchain", App: "app-" + org, AppKey: crypto.DevSigner("app-" + org), Contract: "ct-" + org})
		governors = append(governors, crypto.DevSigner("gov-"+org))
	}
	spec := govchain.ConsortiumSpec{Governors: governors, Participants: parts, Pipes: []govchain.PipeSpec{
		{ID: "p-2-1", From: "org-2", To: "org-1"},
		{ID: "p-1-2", From: "org-1", To: "org-2", Limits: &govchain.PipeLimits{RatePerSec: 500}},
		{ID: "p-1-3", From: "org-1", To: "org-3", Limits: &govchain.PipeLimits{RatePerSec: 500}},
	}}
	if _, err := govchain.SetupConsortium(ctx, c, spec, nil); err != nil {
		t.Fatal(err)
	}
	n := &sanctionNet{t: t, c: c, aud: crypto.DevSigner("auditor-org-3")}
	r := n.ok(ctx, crypto.DevSigner("gov-org-3"), &govchain.MsgProposeAccount{Role: govchain.Role_ROLE_AUDITOR, Suite: "ed25519",
		PublicKey: n.aud.PublicKey(), Name: "auditor-org-3"})
	id := eventAttr(r, "proposal", "id")
	pid, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		t.Fatalf("auditor proposal id %q: %v", id, err)
	}
	for _, g := range governors {
		n.ok(ctx, g, &govchain.MsgVote{ProposalId: pid, Approve: true})
	}
	return n
}

func (n *sanctionNet) ok(ctx context.Context, s crypto.Signer, m proto.Message) *govchain.TxResult {
	n.t.Helper()
	r, err := n.c.Submit(ctx, s, m)
	if err != nil {
		n.t.Fatalf("%T: %v", m, err)
	}
	return r
}

func eventAttr(r *govchain.TxResult, typ, key string) string {
	for _, e := range r.Events {
		if e.Type == typ {
			return e.Attrs[key]
		}
	}
	return ""
}

// report sends every score from the auditor and returns the scores by
// "kind:party".
func (n *sanctionNet) report(ctx context.Context, scores []CreditScore) map[string]CreditScore {
	n.t.Helper()
	for _, s := range scores {
		if _, err := n.c.Submit(ctx, n.aud, s.Report()); err != nil {
			n.t.Fatalf("report %s %s: %v", s.Kind, s.Party, err)
		}
	}
	return byParty(scores)
}

// voting lists the proposals still voting, as "kind subject".
func (n *sanctionNet) voting(ctx context.Context) []string {
	n.t.Helper()
	var out []string
	for id := uint64(1); ; id++ {
		p, err := n.c.Proposal(ctx, id)
		if errors.Is(err, govchain.ErrNoRecord) {
			return out
		}
		if err != nil {
			n.t.Fatal(err)
		}
		if p.Status == govchain.ProposalStatus_PROPOSAL_VOTING {
			out = append(out, p.Kind.String()+" "+p.Subject)
		}
	}
}

func (n *sanctionNet) pipe(ctx context.Context, id string) *govchain.Pipe {
	n.t.Helper()
	p, err := n.c.Pipe(ctx, id)
	if err != nil {
		n.t.Fatal(err)
	}
	return p
}

// TestCreditSanction: relay-org-2 forges a packet's signature (the
// receiving relay proves it) and, later, signs receipts its destination
// chain contradicts; the ledger's scores, reported by an auditor, rate-
// limit its pipes on the real chain and then open the proposals to revoke
// its service and expel its org, once. relay-org-1, beside it, sends
// through chain-org-3's outage (refusals the chain recorded, packets
// retried) and keeps a perfect score throughout.
func TestCreditSanction(t *testing.T) {
	_, conn, db := creditDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n := startSanctionNet(ctx, t)

	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	e21 := endpoints{"org-2", "relay-org-2", "org-1", "relay-org-1"}
	e12 := endpoints{"org-1", "relay-org-1", "org-2", "relay-org-2"}
	e13 := endpoints{"org-1", "relay-org-1", "org-3", "relay-org-3"}
	l := &creditLedger{t: t}
	// window writes one hour of traffic from start: seq numbers from first.
	window := func(start time.Time, first uint64) {
		for i := uint64(0); i < 10; i++ {
			seq := first + i
			at := start.Add(5*time.Minute + time.Duration(i)*time.Second)
			l.packet("p-1-2", seq, e12, at)
			l.receipt("p-1-2", seq, "relay-org-2", "relay-org-1", "DELIVERED", "b2", 10, at.Add(300*time.Millisecond))
			l.packet("p-2-1", seq, e21, at)
			if i < 9 {
				l.receipt("p-2-1", seq, "relay-org-1", "relay-org-2", "DELIVERED", "b1", 10, at.Add(300*time.Millisecond))
			}
			// chain-org-3 is out: of every ten, four refused and recorded
			// by the chain and retried through, two refused still.
			l.packet("p-1-3", seq, e13, at)
			switch {
			case i < 4:
				l.receipt("p-1-3", seq, "relay-org-3", "relay-org-1", "DELIVERED", "b3", 20, at.Add(400*time.Millisecond))
			case i < 8:
				l.receipt("p-1-3", seq, "relay-org-3", "relay-org-1", "DELIVERED", "b3", 40, at.Add(25*time.Minute))
				l.exception("p-1-3", seq, "CONFIRMED", 100+seq)
			default:
				l.receipt("p-1-3", seq, "relay-org-3", "relay-org-1", "REJECTED", "b3", 30, at.Add(time.Second))
				l.exception("p-1-3", seq, "RETRYING", 100+seq)
			}
		}
		// The tenth packet of p-2-1 is relay-org-2's forgery: relay-org-1
		// refuses it and reports the proven offence, as its receiver does.
		seq := first + 9
		at := start.Add(5*time.Minute + 9*time.Second)
		l.receipt("p-2-1", seq, "relay-org-1", "relay-org-2", "REJECTED", "", 0, at.Add(300*time.Millisecond))
		l.offence(ctx, offence.Record{TimeUnixMs: at.Add(200 * time.Millisecond).UnixMilli(), Reporter: "relay-org-1",
			Stage: offence.StageReceiver, Reason: "bad_signature", Org: "org-2", Relay: "relay-org-2", Pipe: "p-2-1", Seq: seq,
			PacketID: pid("p-2-1", seq), Detail: "signature does not verify under the credential's key", Proven: true})
	}

	// Hour 1: one proven forgery takes relay-org-2 below credit_restrict.
	window(t0, 1)
	l.write(ctx, conn, db)
	w1 := CreditWindow{Start: t0, End: t0.Add(time.Hour)}
	s1, err := Credit(ctx, conn, db, w1)
	if err != nil {
		t.Fatal(err)
	}
	got := n.report(ctx, s1)
	liar, honest := got["relay:relay-org-2"], got["relay:relay-org-1"]
	if liar.Score1000 >= govchain.DefaultCreditRestrict || liar.Score1000 < govchain.DefaultCreditExpel || liar.ProvenOffences != 1 {
		t.Fatalf("hour 1, relay-org-2: %d with %d proven offences, want within [%d, %d): %q", liar.Score1000, liar.ProvenOffences,
			govchain.DefaultCreditExpel, govchain.DefaultCreditRestrict, liar.Reasons)
	}
	if honest.Score1000 != 1000 || honest.ChainDecided != 2 || honest.DeliveryFaults != 0 {
		t.Fatalf("hour 1, relay-org-1 through chain-org-3's outage: %d, chain decided %d, faults %d: %q", honest.Score1000,
			honest.ChainDecided, honest.DeliveryFaults, honest.Reasons)
	}
	for _, id := range []string{"p-2-1", "p-1-2"} {
		p := n.pipe(ctx, id)
		if p.GetLimits().GetRatePerSec() != govchain.DefaultCreditRestrictedRate || !slices.Contains(p.RestrictedBy, "relay:relay-org-2") {
			t.Fatalf("hour 1: pipe %s of relay-org-2: rate %d, restricted by %v", id, p.GetLimits().GetRatePerSec(), p.RestrictedBy)
		}
	}
	if p := n.pipe(ctx, "p-1-3"); p.GetLimits().GetRatePerSec() != 500 || len(p.RestrictedBy) != 0 {
		t.Fatalf("hour 1: relay-org-1's pipe p-1-3: rate %d, restricted by %v", p.GetLimits().GetRatePerSec(), p.RestrictedBy)
	}
	if v := n.voting(ctx); len(v) != 0 {
		t.Fatalf("hour 1: proposals opened above credit_expel: %v", v)
	}

	// Hour 2: another forgery and two receipts its destination chain
	// contradicts (the compensator's proven offences) take it below
	// credit_expel: the proposals open, once however often it is reported.
	t1 := t0.Add(time.Hour)
	window(t1, 11)
	for _, seq := range []uint64{11, 12} {
		l.offence(ctx, offence.Record{TimeUnixMs: t1.Add(30 * time.Minute).UnixMilli(), Reporter: "relay-org-1",
			Stage: offence.StageCompensator, Reason: "receipt_contradicted", Org: "org-2", Relay: "relay-org-2", Pipe: "p-1-2", Seq: seq,
			PacketID: pid("p-1-2", seq), Detail: "receipt DELIVERED; chain-org-2 has no execution", Proven: true})
	}
	l.write(ctx, conn, db)
	w2 := CreditWindow{Start: t1, End: t1.Add(time.Hour)}
	var s2 []CreditScore
	for range 2 {
		if s2, err = Credit(ctx, conn, db, w2); err != nil {
			t.Fatal(err)
		}
		got = n.report(ctx, s2)
	}
	liar, honest = got["relay:relay-org-2"], got["relay:relay-org-1"]
	if liar.Score1000 >= govchain.DefaultCreditExpel || liar.ProvenOffences != 3 {
		t.Fatalf("hour 2, relay-org-2: %d with %d proven offences: %q", liar.Score1000, liar.ProvenOffences, liar.Reasons)
	}
	if honest.Score1000 != 1000 {
		t.Fatalf("hour 2, relay-org-1: %d: %q", honest.Score1000, honest.Reasons)
	}
	want := []string{"PROPOSAL_EXPEL_ORG org-2", "PROPOSAL_REVOKE_SERVICE relay-org-2"}
	v := n.voting(ctx)
	slices.Sort(v)
	if !slices.Equal(v, want) {
		t.Fatalf("hour 2: proposals voting %v, want %v (once each)", v, want)
	}
	if p := n.pipe(ctx, "p-1-3"); p.GetLimits().GetRatePerSec() != 500 || len(p.RestrictedBy) != 0 {
		t.Fatalf("hour 2: relay-org-1's pipe p-1-3: rate %d, restricted by %v", p.GetLimits().GetRatePerSec(), p.RestrictedBy)
	}
	st := &govchain.CreditStanding{}
	if _, err := n.c.Get(ctx, govchain.KeyCreditStanding(govchain.PartyKind_PARTY_RELAY, "relay-org-1"), st); err != nil || st.Score != 1000 || st.Restricted {
		t.Fatalf("relay-org-1's standing on chain: %v (%v)", st, err)
	}
}
