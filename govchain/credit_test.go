package govchain

import (
	"bytes"
	"context"
	"slices"
	"testing"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/ccgpmesh/ccgp/crypto"
)

var digest = bytes.Repeat([]byte{7}, 32)

// creditChain is the consortium (relays, subchains, contracts of org-a and
// org-b) with pipe p1 from org-a to org-b at its own rate of 50/s, and an
// auditor in each genesis org, under params p.
func creditChain(t *testing.T, p *Params) (*chain, map[string]crypto.Signer) {
	t.Helper()
	app, err := NewInMemoryApp(nil)
	if err != nil {
		t.Fatal(err)
	}
	gs := genesisFor("org-a", "org-b", "org-c")
	gs.Params = p
	c := newChain(t, app, gs)
	c.consortium()
	c.ok(gov("org-a"), &MsgApplyPipe{Id: "p1", SourceContract: "ct-org-a", DestinationOrg: "org-b", DestinationSubchain: "chain-org-b",
		Limits: &PipeLimits{RatePerSec: 50}})
	c.ok(gov("org-b"), &MsgAuthorizePipe{Id: "p1", DestinationContract: "ct-org-b"})
	aud := map[string]crypto.Signer{}
	for _, o := range []string{"org-a", "org-b", "org-c"} {
		aud[o] = crypto.DevSigner("aud-" + o)
		c.admitAccount(gov(o), Role_ROLE_AUDITOR, aud[o])
	}
	return c, aud
}

func creditParams(minAuditors uint32) *Params {
	return &Params{QuorumNum: 2, QuorumDen: 3, VotingPeriod: 20, CreditRestrict: 600, CreditExpel: 300,
		CreditRestrictedRate: 10, CreditMinAuditors: minAuditors}
}

// window returns the n-th hour's window, so later reports have later ends.
func window(n int64) (int64, int64) {
	start := int64(1_700_000_000) + n*3600
	return start, start + 3600
}

func report(k PartyKind, party string, score uint32, n int64) *MsgReportCredit {
	s, e := window(n)
	return &MsgReportCredit{Kind: k, Party: party, Score: score, WindowStart: s, WindowEnd: e, EvidenceDigest: digest}
}

func (c *chain) pipe(id string) *Pipe {
	c.t.Helper()
	p := &Pipe{}
	if !c.get(KeyPipe(id), p) {
		c.t.Fatalf("no pipe %s", id)
	}
	return p
}

func (c *chain) standing(k PartyKind, party string) *CreditStanding {
	c.t.Helper()
	st := &CreditStanding{}
	c.get(KeyCreditStanding(k, party), st)
	return st
}

// openProposals lists the proposals still voting on subject.
func (c *chain) openProposals(kind ProposalKind, subject string) []uint64 {
	c.t.Helper()
	var ids []uint64
	for id := uint64(1); ; id++ {
		p := &Proposal{}
		if !c.get(KeyProposal(id), p) {
			return ids
		}
		if p.Kind == kind && p.Subject == subject && p.Status == ProposalStatus_PROPOSAL_VOTING {
			ids = append(ids, id)
		}
	}
}

func TestReportCreditRejected(t *testing.T) {
	c, aud := creditChain(t, creditParams(1))
	long := report(PartyKind_PARTY_ORG, "org-b", 500, 0)
	long.WindowEnd = long.WindowStart + maxCreditWindow + 1
	backwards := report(PartyKind_PARTY_ORG, "org-b", 500, 0)
	backwards.WindowEnd = backwards.WindowStart
	short := report(PartyKind_PARTY_ORG, "org-b", 500, 0)
	short.EvidenceDigest = digest[:31]
	noKind := report(PartyKind_PARTY_KIND_UNSPECIFIED, "org-b", 500, 0)
	for _, tc := range []struct {
		name string
		s    crypto.Signer
		m    *MsgReportCredit
		code uint32
		want string
	}{
		{"governor", gov("org-a"), report(PartyKind_PARTY_ORG, "org-b", 500, 0), CodeUnauthorized, "role governor"},
		{"cross-chain account", crypto.DevSigner("cc-org-a"), report(PartyKind_PARTY_ORG, "org-b", 500, 0), CodeUnauthorized, "role cross-chain"},
		{"no kind", aud["org-c"], noKind, CodeInvalid, "org or relay"},
		{"bad party id", aud["org-c"], report(PartyKind_PARTY_ORG, "Org/B", 500, 0), CodeInvalid, "party id"},
		{"score over 1000", aud["org-c"], report(PartyKind_PARTY_ORG, "org-b", 1001, 0), CodeInvalid, "over 1000"},
		{"window backwards", aud["org-c"], backwards, CodeInvalid, "before the end"},
		{"window too long", aud["org-c"], long, CodeInvalid, "window of"},
		{"short digest", aud["org-c"], short, CodeInvalid, "32 bytes"},
		{"unknown org", aud["org-c"], report(PartyKind_PARTY_ORG, "org-z", 500, 0), CodeNotFound, "does not exist"},
		{"unknown relay", aud["org-c"], report(PartyKind_PARTY_RELAY, "relay-z", 500, 0), CodeNotFound, "not registered"},
	} {
		t.Run(tc.name, func(t *testing.T) { c.rejected(tc.s, tc.m, tc.code, tc.want) })
	}
	// An auditor's report passes CheckTx (the auditor rule lets this one
	// message through); its other txs are refused by CheckTx and
	// FinalizeBlock alike.
	ct, err := c.app.CheckTx(context.Background(), &abci.CheckTxRequest{Tx: c.tx(aud["org-c"], report(PartyKind_PARTY_ORG, "org-b", 900, 1))})
	if err != nil || ct.Code != CodeOK {
		t.Fatalf("CheckTx of an auditor's report: %v %d %s", err, ct.GetCode(), ct.GetLog())
	}
	c.both(c.tx(aud["org-c"], &MsgSuspendPipe{Id: "p1"}), CodeUnauthorized, "report credit scores")
	c.ok(aud["org-c"], report(PartyKind_PARTY_ORG, "org-b", 900, 5))
	c.rejected(aud["org-c"], report(PartyKind_PARTY_ORG, "org-b", 900, 4), CodeBadState, "before this auditor's last report")
	// A revoked auditor reports nothing.
	c.ok(gov("org-c"), &MsgRevokeAccount{Account: addr(aud["org-c"]), Reason: "left"})
	c.rejected(aud["org-c"], report(PartyKind_PARTY_ORG, "org-b", 900, 6), CodeRevoked, "revoked")
}

func TestCreditRestrictAndLift(t *testing.T) {
	c, aud := creditChain(t, creditParams(1))
	relay, org := PartyKind_PARTY_RELAY, PartyKind_PARTY_ORG
	type want struct {
		rate uint32
		by   []string
	}
	check := func(step string, w want) {
		t.Helper()
		p := c.pipe("p1")
		if p.Limits.GetRatePerSec() != w.rate || !slices.Equal(p.RestrictedBy, w.by) {
			t.Fatalf("%s: pipe rate %d restricted by %v, want %d by %v", step, p.Limits.GetRatePerSec(), p.RestrictedBy, w.rate, w.by)
		}
		if len(w.by) == 0 && p.OwnRatePerSec != 0 {
			t.Fatalf("%s: own rate %d kept after the lift", step, p.OwnRatePerSec)
		}
	}
	for _, step := range []struct {
		name  string
		kind  PartyKind
		party string
		score uint32
		want  want
	}{
		{"relay at the threshold is not restricted", relay, "relay-org-a", 600, want{50, nil}},
		{"relay below restrict", relay, "relay-org-a", 599, want{10, []string{"relay:relay-org-a"}}},
		{"still below: no change", relay, "relay-org-a", 400, want{10, []string{"relay:relay-org-a"}}},
		{"destination org below too", org, "org-b", 550, want{10, []string{"org:org-b", "relay:relay-org-a"}}},
		{"relay recovers, the org still restricts", relay, "relay-org-a", 800, want{10, []string{"org:org-b"}}},
		{"org recovers: own rate back", org, "org-b", 600, want{50, nil}},
		{"an org that runs no end of p1", org, "org-c", 100, want{50, nil}},
	} {
		c.ok(aud["org-c"], report(step.kind, step.party, step.score, c.height))
		check(step.name, step.want)
	}
	if st := c.standing(org, "org-b"); st.Score != 600 || st.Restricted || st.AuditorOrgs != 1 {
		t.Fatalf("standing of org-b: %v", st)
	}

	// A pipe applied while its org is restricted starts restricted; a
	// slower own rate than the restricted one is kept.
	c.ok(aud["org-c"], report(org, "org-a", 500, 1000))
	c.ok(gov("org-b"), &MsgRegisterContract{Id: "ct2-org-b", App: "app-org-b", Address: "0xdef"})
	c.ok(gov("org-a"), &MsgApplyPipe{Id: "p2", SourceContract: "ct-org-a", DestinationOrg: "org-b", DestinationSubchain: "chain-org-b",
		Limits: &PipeLimits{RatePerSec: 5}})
	c.ok(gov("org-a"), &MsgApplyPipe{Id: "p3", SourceContract: "ct-org-a", DestinationOrg: "org-b", DestinationSubchain: "chain-org-b"})
	if p := c.pipe("p2"); p.Limits.RatePerSec != 5 || !slices.Equal(p.RestrictedBy, []string{"org:org-a"}) || p.OwnRatePerSec != 5 {
		t.Fatalf("new pipe under a restricted org, own rate 5: %v", p)
	}
	if p := c.pipe("p3"); p.Limits.RatePerSec != 10 || p.OwnRatePerSec != 0 {
		t.Fatalf("new unlimited pipe under a restricted org: %v", p)
	}
	c.ok(aud["org-c"], report(org, "org-a", 900, 1001))
	if p := c.pipe("p3"); p.Limits.RatePerSec != 0 || p.RestrictedBy != nil {
		t.Fatalf("unlimited pipe after the lift: %v", p)
	}
	if p := c.pipe("p2"); p.Limits.RatePerSec != 5 {
		t.Fatalf("pipe p2 after the lift: %v", p)
	}
}

func TestCreditExpulsion(t *testing.T) {
	c, aud := creditChain(t, creditParams(1))
	relay, org := PartyKind_PARTY_RELAY, PartyKind_PARTY_ORG

	// A relay below credit_expel: a revoke-service proposal, once.
	c.ok(aud["org-c"], report(relay, "relay-org-a", 250, 1))
	ids := c.openProposals(ProposalKind_PROPOSAL_REVOKE_SERVICE, "relay-org-a")
	if len(ids) != 1 || c.standing(relay, "relay-org-a").ExpelProposal != ids[0] {
		t.Fatalf("after a score below expel: proposals %v, standing %v", ids, c.standing(relay, "relay-org-a"))
	}
	c.ok(aud["org-c"], report(relay, "relay-org-a", 100, 2))
	c.ok(aud["org-b"], report(relay, "relay-org-a", 50, 2))
	if again := c.openProposals(ProposalKind_PROPOSAL_REVOKE_SERVICE, "relay-org-a"); !slices.Equal(again, ids) {
		t.Fatalf("reports while one is voting opened more: %v", again)
	}
	if !slices.Contains(c.pipe("p1").RestrictedBy, "relay:relay-org-a") {
		t.Fatal("a relay below expel is restricted too")
	}
	c.passVote(ids[0])
	s := &Service{}
	c.get(KeyService("relay-org-a"), s)
	if s.Status != ServiceStatus_SERVICE_REVOKED {
		t.Fatalf("service after the vote: %v", s.Status)
	}
	if p := c.pipe("p1"); p.Status != PipeStatus_PIPE_SUSPENDED {
		t.Fatalf("pipe through the revoked relay: %v", p.Status)
	}
	// The relay's org is not expelled: the score was the relay's.
	o := &Org{}
	c.get(KeyOrg("org-a"), o)
	if o.Status != OrgStatus_ORG_ACTIVE {
		t.Fatalf("org of the revoked relay: %v", o.Status)
	}
	c.rejected(aud["org-c"], report(relay, "relay-org-a", 10, 3), CodeBadState, "revoked")

	// An org below credit_expel: an expel-org proposal without the org
	// in its electorate; rejected, the next report opens another.
	r := c.ok(aud["org-c"], report(org, "org-b", 200, 4))
	ids = c.openProposals(ProposalKind_PROPOSAL_EXPEL_ORG, "org-b")
	if len(ids) != 1 || proposalID(t, r) != ids[0] {
		t.Fatalf("expel-org proposals: %v", ids)
	}
	p := &Proposal{}
	c.get(KeyProposal(ids[0]), p)
	if p.Electorate != 2 || p.ProposerOrg != "org-c" || p.Reason == "" {
		t.Fatalf("expel-org proposal: %v", p)
	}
	c.ok(aud["org-c"], report(org, "org-b", 150, 5))
	if again := c.openProposals(ProposalKind_PROPOSAL_EXPEL_ORG, "org-b"); len(again) != 1 {
		t.Fatalf("second report opened another: %v", again)
	}
	c.ok(gov("org-a"), &MsgVote{ProposalId: ids[0], Approve: false})
	c.get(KeyProposal(ids[0]), p)
	if p.Status != ProposalStatus_PROPOSAL_REJECTED {
		t.Fatalf("proposal after a no of 2: %v", p.Status)
	}
	c.ok(aud["org-c"], report(org, "org-b", 150, 6))
	next := c.openProposals(ProposalKind_PROPOSAL_EXPEL_ORG, "org-b")
	if len(next) != 1 || next[0] == ids[0] {
		t.Fatalf("after the rejection: %v", next)
	}
	// A score between expel and restrict proposes nothing.
	c.ok(aud["org-c"], report(org, "org-a", 450, 7))
	if got := c.openProposals(ProposalKind_PROPOSAL_EXPEL_ORG, "org-a"); len(got) != 0 {
		t.Fatalf("a restricted, not expellable, score opened %v", got)
	}
}

func TestCreditMedianOverAuditorOrgs(t *testing.T) {
	c, aud := creditChain(t, creditParams(2))
	relay := PartyKind_PARTY_RELAY
	steps := []struct {
		name       string
		s          crypto.Signer
		score      uint32
		n          int64
		counted    uint32 // auditor orgs counted; 0: no score counts yet
		want       uint32
		restricted bool
	}{
		// One auditor org is under the minimum of 2: its 100 does nothing.
		{"one lying auditor", aud["org-c"], 100, 1, 0, 0, false},
		// Two: the upper median of {100, 900} is 900: the liar alone cannot sanction.
		{"an honest second", aud["org-a"], 900, 1, 2, 900, false},
		// Three: {100, 200, 900} -> 200: a majority says bad.
		{"a second low report", aud["org-b"], 200, 1, 3, 200, true},
		// The same auditor again: its latest report replaces its earlier one.
		{"org-b revises", aud["org-b"], 950, 2, 3, 900, false},
	}
	for _, st := range steps {
		c.ok(st.s, report(relay, "relay-org-a", st.score, st.n))
		got := &CreditStanding{}
		found := c.get(KeyCreditStanding(relay, "relay-org-a"), got)
		if st.counted == 0 {
			if found || c.pipe("p1").RestrictedBy != nil {
				t.Fatalf("%s: a score counted below the minimum: %v", st.name, got)
			}
			continue
		}
		if got.AuditorOrgs != st.counted || got.Score != st.want || got.Restricted != st.restricted {
			t.Fatalf("%s: standing %v, want %d orgs, score %d, restricted %v", st.name, got, st.counted, st.want, st.restricted)
		}
		if (c.pipe("p1").RestrictedBy != nil) != st.restricted {
			t.Fatalf("%s: pipe %v", st.name, c.pipe("p1"))
		}
	}
	// Two auditors of one org count once: the later window of org-c's
	// second auditor replaces org-c's 100; {900, 950, 950} -> 950.
	aud2 := crypto.DevSigner("aud2-org-c")
	c.admitAccount(gov("org-c"), Role_ROLE_AUDITOR, aud2)
	c.ok(aud2, report(relay, "relay-org-a", 950, 3))
	if got := c.standing(relay, "relay-org-a"); got.AuditorOrgs != 3 || got.Score != 950 {
		t.Fatalf("two auditors of one org: %v", got)
	}
	// An auditor revoked by its org no longer counts: org-a's 900 goes,
	// {950 (org-b), 950 (org-c)} remain.
	c.ok(gov("org-a"), &MsgRevokeAccount{Account: addr(aud["org-a"]), Reason: "rotated out"})
	c.ok(aud2, report(relay, "relay-org-a", 100, 4))
	// org-c now says 100 (its latest window), org-b 950: upper median 950.
	if got := c.standing(relay, "relay-org-a"); got.AuditorOrgs != 2 || got.Score != 950 || got.Restricted {
		t.Fatalf("after a revocation and one low report: %v", got)
	}
}
