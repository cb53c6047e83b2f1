package govchain

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ccgpmesh/ccgp/crypto"
)

// The credit sanction rule. Auditors report scores (MsgReportCredit); the
// chain counts them and, in the same tx, restricts, lifts or proposes to
// expel. Everything here reads and writes state only through the tx's
// overlay and sorts before it decides, so every node decides alike.
//
// The rule, for one party (an org, or a relay by its service):
//  1. Keep the latest report of each auditor account (d/<kind>/<party>/<addr>).
//  2. Count, per distinct auditor org still active (the account active and
//     still an auditor), the report with the latest window end.
//  3. Fewer than credit_min_auditors orgs: no score counts; the standing
//     keeps its last decision.
//  4. The counted score is the upper median of those reports (index n/2 of
//     the sorted scores): it falls below a threshold only when a strict
//     majority of the counted auditor orgs report below it, so one lying
//     auditor among two or more cannot sanction alone.
//  5. Below credit_restrict: every pipe the party runs (its org at either
//     end, or its relay at either end) is shaped to credit_restricted_rate;
//     at or above: the party's restriction is lifted, and a pipe no other
//     party restricts gets its own rate back.
//  6. Below credit_expel: an expulsion proposal opens for the genesis orgs
//     (an org: PROPOSAL_EXPEL_ORG; a relay: PROPOSAL_REVOKE_SERVICE), unless
//     one for the same subject is still voting.

// Defaults of the credit params (Params.credit_*; 0 in Params means these).
const (
	DefaultCreditRestrict       = 600
	DefaultCreditExpel          = 300
	DefaultCreditRestrictedRate = 10 // packets per second
	DefaultCreditMinAuditors    = 1
	// MaxCreditScore is the best score; a report above it is refused.
	MaxCreditScore = 1000
	// maxCreditWindow bounds a report's window (31 days): a score over a
	// longer window says little about the party now.
	maxCreditWindow = 31 * 24 * 3600
)

const (
	prefixCredit   = "d/" // d/<kind>/<party>/<auditor address>: CreditReport
	prefixStanding = "h/" // h/<kind>/<party>: CreditStanding
)

func (p *Params) creditRestrict() uint32 { return orDefault(p.CreditRestrict, DefaultCreditRestrict) }
func (p *Params) creditExpel() uint32    { return orDefault(p.CreditExpel, DefaultCreditExpel) }
func (p *Params) creditRate() uint32 {
	return orDefault(p.CreditRestrictedRate, DefaultCreditRestrictedRate)
}
func (p *Params) creditMinAuditors() uint32 {
	return orDefault(p.CreditMinAuditors, DefaultCreditMinAuditors)
}

func orDefault(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

// partyTag names a party in keys and in Pipe.restricted_by ("org:x",
// "relay:y"); "" for a kind that is neither.
func partyTag(k PartyKind, id string) string {
	switch k {
	case PartyKind_PARTY_ORG:
		return "org:" + id
	case PartyKind_PARTY_RELAY:
		return "relay:" + id
	}
	return ""
}

func creditPrefix(k PartyKind, party string) string {
	if k == PartyKind_PARTY_ORG {
		return prefixCredit + "org/" + party + "/"
	}
	return prefixCredit + "relay/" + party + "/"
}

// KeyCreditReport is the key of auditor's latest report on a party.
func KeyCreditReport(k PartyKind, party string, auditor crypto.Address) []byte {
	return append([]byte(creditPrefix(k, party)), auditor[:]...)
}

// KeyCreditStanding is the key of a party's counted score and sanctions.
func KeyCreditStanding(k PartyKind, party string) []byte {
	if k == PartyKind_PARTY_ORG {
		return []byte(prefixStanding + "org/" + party)
	}
	return []byte(prefixStanding + "relay/" + party)
}

func (x *execCtx) reportCredit(m *MsgReportCredit) (*TxError, error) {
	org, r, err := x.requireRole("report-credit", Role_ROLE_AUDITOR)
	if r != nil || err != nil {
		return r, err
	}
	if partyTag(m.Kind, m.Party) == "" {
		return reject(CodeInvalid, "report-credit: party kind must be org or relay"), nil
	}
	if r := validID("party", m.Party); r != nil {
		return r, nil
	}
	action := "report-credit " + partyTag(m.Kind, m.Party)
	switch {
	case m.Score > MaxCreditScore:
		return reject(CodeInvalid, "%s: score %d is over %d", action, m.Score, MaxCreditScore), nil
	case m.WindowStart <= 0 || m.WindowEnd <= m.WindowStart:
		return reject(CodeInvalid, "%s: window %d..%d: the start must be a positive unix time before the end", action, m.WindowStart, m.WindowEnd), nil
	case m.WindowEnd-m.WindowStart > maxCreditWindow:
		return reject(CodeInvalid, "%s: window of %d s is over %d s", action, m.WindowEnd-m.WindowStart, maxCreditWindow), nil
	case len(m.EvidenceDigest) != 32:
		return reject(CodeInvalid, "%s: evidence digest must be 32 bytes (sha256), got %d", action, len(m.EvidenceDigest)), nil
	}
	if r, err := x.partyLive(action, m.Kind, m.Party); r != nil || err != nil {
		return r, err
	}
	key := KeyCreditReport(m.Kind, m.Party, x.senderAddr)
	prev := &CreditReport{}
	found, err := load(x.st, key, prev)
	if err != nil {
		return nil, err
	}
	if found && m.WindowEnd < prev.WindowEnd {
		return reject(CodeBadState, "%s: window ends at %d, before this auditor's last report (%d)", action, m.WindowEnd, prev.WindowEnd), nil
	}
	rep := &CreditReport{Kind: m.Kind, Party: m.Party, Score: m.Score, WindowStart: m.WindowStart, WindowEnd: m.WindowEnd,
		EvidenceDigest: m.EvidenceDigest, Auditor: x.senderAddr[:], AuditorOrg: org.Id, Height: x.height}
	if err := x.st.put(key, rep); err != nil {
		return nil, err
	}
	x.emit("credit_report", "party", partyTag(m.Kind, m.Party), "score", fmt.Sprint(m.Score), "auditor_org", org.Id)
	return nil, x.applyCredit(m.Kind, m.Party, org.Id, key)
}

// partyLive rejects a report on a party that does not exist or that is
// already out (an expelled org, a revoked service): no rule applies to it.
func (x *execCtx) partyLive(action string, k PartyKind, party string) (*TxError, error) {
	if k == PartyKind_PARTY_ORG {
		o := &Org{}
		found, err := load(x.st, KeyOrg(party), o)
		switch {
		case err != nil:
			return nil, err
		case !found:
			return reject(CodeNotFound, "%s: org does not exist", action), nil
		case o.Status != OrgStatus_ORG_ACTIVE:
			return reject(CodeBadState, "%s: org is not an active member", action), nil
		}
		return nil, nil
	}
	s := &Service{}
	found, err := load(x.st, KeyService(party), s)
	switch {
	case err != nil:
		return nil, err
	case !found:
		return reject(CodeNotFound, "%s: relay is not registered", action), nil
	case s.Status == ServiceStatus_SERVICE_REVOKED:
		return reject(CodeBadState, "%s: relay's service is revoked", action), nil
	}
	return nil, nil
}

// countedScore carries out steps 1-4 of the rule: the upper median of the
// latest report of each distinct active auditor org, and how many orgs
// it counted. current is the key this tx wrote (keysUnder sees only the
// state before the tx).
func (x *execCtx) countedScore(k PartyKind, party string, current []byte) (score uint32, orgs int, err error) {
	keys, err := x.keysUnder(creditPrefix(k, party))
	if err != nil {
		return 0, 0, err
	}
	if !slices.ContainsFunc(keys, func(b []byte) bool { return bytes.Equal(b, current) }) {
		keys = append(keys, current)
	}
	latest := map[string]*CreditReport{}
	for _, key := range keys {
		rep := &CreditReport{}
		if found, err := load(x.st, key, rep); err != nil || !found {
			if err != nil {
				return 0, 0, err
			}
			continue
		}
		if ok, err := x.activeAuditor(rep); err != nil || !ok {
			if err != nil {
				return 0, 0, err
			}
			continue
		}
		// Keys come sorted by auditor address, so ties on window end and
		// height go to the same report on every node.
		if cur, ok := latest[rep.AuditorOrg]; !ok || rep.WindowEnd > cur.WindowEnd ||
			(rep.WindowEnd == cur.WindowEnd && rep.Height > cur.Height) {
			latest[rep.AuditorOrg] = rep
		}
	}
	scores := make([]uint32, 0, len(latest))
	for _, rep := range latest {
		scores = append(scores, rep.Score)
	}
	if len(scores) == 0 {
		return 0, 0, nil
	}
	sort.Slice(scores, func(i, j int) bool { return scores[i] < scores[j] })
	return scores[len(scores)/2], len(scores), nil
}

// activeAuditor says whether a report's author still counts: its account
// active, still an auditor, of the org the report names, which is active.
func (x *execCtx) activeAuditor(rep *CreditReport) (bool, error) {
	addr, err := crypto.AddressFromBytes(rep.Auditor)
	if err != nil {
		return false, fmt.Errorf("state: credit report auditor: %w", err)
	}
	a := &Account{}
	found, err := load(x.st, KeyAccount(addr), a)
	if err != nil || !found || a.Status != AccountStatus_ACCOUNT_ACTIVE || a.Role != Role_ROLE_AUDITOR || a.Org != rep.AuditorOrg {
		return false, err
	}
	o := &Org{}
	found, err = load(x.st, KeyOrg(a.Org), o)
	return found && o.Status == OrgStatus_ORG_ACTIVE, err
}

// applyCredit carries out steps 3-6 of the rule for one party.
func (x *execCtx) applyCredit(k PartyKind, party, auditorOrg string, current []byte) error {
	score, orgs, err := x.countedScore(k, party, current)
	if err != nil {
		return err
	}
	skey := KeyCreditStanding(k, party)
	st := &CreditStanding{Kind: k, Party: party}
	if _, err := load(x.st, skey, st); err != nil {
		return err
	}
	tag := partyTag(k, party)
	if uint32(orgs) < x.params.creditMinAuditors() {
		x.emit("credit", "party", tag, "counted", "false", "auditor_orgs", fmt.Sprint(orgs))
		return nil // the standing keeps its last decision
	}
	st.Score, st.AuditorOrgs, st.Height = score, uint32(orgs), x.height
	restrict := score < x.params.creditRestrict()
	if restrict != st.Restricted {
		if err := x.restrictPipes(k, party, restrict); err != nil {
			return err
		}
		st.Restricted = restrict
	}
	x.emit("credit", "party", tag, "counted", "true", "score", fmt.Sprint(score), "auditor_orgs", fmt.Sprint(orgs),
		"restricted", fmt.Sprint(restrict))
	if score < x.params.creditExpel() {
		id, err := x.proposeExpulsion(k, party, auditorOrg, score)
		if err != nil {
			return err
		}
		if id != 0 {
			st.ExpelProposal = id
		}
	}
	return x.st.put(skey, st)
}

// runs says whether a pipe has the party at either end.
func runs(p *Pipe, k PartyKind, party string) bool {
	at := func(e *PipeEndpoint) bool {
		if e == nil {
			return false
		}
		if k == PartyKind_PARTY_ORG {
			return e.Org == party
		}
		return e.RelayId == party
	}
	return at(p.Source) || at(p.Destination)
}

// restrictPipes adds the party to (or removes it from) restricted_by of
// every pipe it runs, and sets each such pipe's rate accordingly.
func (x *execCtx) restrictPipes(k PartyKind, party string, restrict bool) error {
	keys, err := x.keysUnder(prefixPipe)
	if err != nil {
		return err
	}
	tag := partyTag(k, party)
	for _, key := range keys {
		p := &Pipe{}
		if _, err := load(x.st, key, p); err != nil {
			return err
		}
		if !runs(p, k, party) {
			continue
		}
		if !x.setRestricted(p, tag, restrict) {
			continue
		}
		status, reason := "rate-limited", fmt.Sprintf("credit scores of %s: %d packets/s", strings.Join(p.RestrictedBy, ", "), p.Limits.GetRatePerSec())
		if len(p.RestrictedBy) == 0 {
			status, reason = "rate restored", fmt.Sprintf("its own %d packets/s (0: unlimited)", p.Limits.GetRatePerSec())
		}
		x.emit("pipe", "id", p.Id, "status", status, "reason", reason, "rate_per_sec", fmt.Sprint(p.Limits.GetRatePerSec()))
		if err := x.st.put(key, p); err != nil {
			return err
		}
	}
	return nil
}

// setRestricted adds or removes tag in p.RestrictedBy and sets the rate;
// it reports whether p changed.
func (x *execCtx) setRestricted(p *Pipe, tag string, restrict bool) bool {
	i, has := slices.BinarySearch(p.RestrictedBy, tag)
	if has == restrict {
		return false
	}
	if p.Limits == nil {
		p.Limits = &PipeLimits{}
	}
	if restrict {
		if len(p.RestrictedBy) == 0 {
			p.OwnRatePerSec = p.Limits.RatePerSec
		}
		p.RestrictedBy = slices.Insert(p.RestrictedBy, i, tag)
		p.Limits.RatePerSec = x.params.creditRate()
		if p.OwnRatePerSec != 0 && p.OwnRatePerSec < p.Limits.RatePerSec {
			p.Limits.RatePerSec = p.OwnRatePerSec // a slower own rate stays
		}
		return true
	}
	p.RestrictedBy = slices.Delete(p.RestrictedBy, i, i+1)
	if len(p.RestrictedBy) == 0 {
		p.RestrictedBy = nil
		p.Limits.RatePerSec, p.OwnRatePerSec = p.OwnRatePerSec, 0
	}
	return true
}

// restrictNewPipe applies the standing restrictions of its parties to a
// pipe being applied for, so a restricted party cannot escape its rate by
// opening a new pipe.
func (x *execCtx) restrictNewPipe(p *Pipe) error {
	parties := []struct {
		k  PartyKind
		id string
	}{
		{PartyKind_PARTY_ORG, p.Source.GetOrg()}, {PartyKind_PARTY_ORG, p.Destination.GetOrg()},
		{PartyKind_PARTY_RELAY, p.Source.GetRelayId()}, {PartyKind_PARTY_RELAY, p.Destination.GetRelayId()},
	}
	for _, pt := range parties {
		if pt.id == "" {
			continue
		}
		st := &CreditStanding{}
		found, err := load(x.st, KeyCreditStanding(pt.k, pt.id), st)
		if err != nil {
			return err
		}
		if found && st.Restricted {
			x.setRestricted(p, partyTag(pt.k, pt.id), true)
		}
	}
	return nil
}

// proposeExpulsion opens the rule's expulsion proposal for a party, unless
// one for the same subject is still voting (opened by the rule or by a
// governor) or it could not pass (the last genesis org). It returns the
// id of the proposal it opened or found voting, or 0.
//
// A relay's expulsion is the revocation of its service, not its org's
// expulsion: the score is the relay's, and its org may run other relays
// and pipes honestly. An org's own score (over all its relays and apps)
// is what proposes expelling the org.
func (x *execCtx) proposeExpulsion(k PartyKind, party, auditorOrg string, score uint32) (uint64, error) {
	kind := ProposalKind_PROPOSAL_EXPEL_ORG
	if k == PartyKind_PARTY_RELAY {
		kind = ProposalKind_PROPOSAL_REVOKE_SERVICE
	}
	open, err := x.keysUnder(prefixOpenProp)
	if err != nil {
		return 0, err
	}
	for _, key := range open {
		p := &Proposal{}
		id := beUint64(key[len(prefixOpenProp)+8:])
		if _, err := load(x.st, KeyProposal(id), p); err != nil {
			return 0, err
		}
		if p.Status == ProposalStatus_PROPOSAL_VOTING && p.Kind == kind && p.Subject == party {
			return id, nil
		}
	}
	if k == PartyKind_PARTY_ORG {
		if elector, err := x.isElector(party); err != nil {
			return 0, err
		} else if e, err := x.genesisOrgs(); err != nil {
			return 0, err
		} else if elector && e <= 1 {
			x.emit("credit", "party", partyTag(k, party), "expel", "skipped: the last genesis org")
			return 0, nil
		}
	}
	next, err := x.st.Get([]byte(keyNextProp))
	if err != nil {
		return 0, err
	}
	id := uint64(1)
	if len(next) == 8 {
		id = beUint64(next)
	}
	reason := fmt.Sprintf("credit score %d is below credit_expel %d", score, x.params.creditExpel())
	if r, err := x.proposeWhy(kind, party, auditorOrg, reason); r != nil || err != nil {
		if err == nil {
			err = fmt.Errorf("state: credit expulsion proposal: %w", r)
		}
		return 0, err
	}
	return id, nil
}

// revokeService settles a passed PROPOSAL_REVOKE_SERVICE: the relay's
// service is revoked and the pipes through it suspended, as an account's
// revocation does for the pipes that name it.
func (x *execCtx) revokeService(relay string) error {
	through := func(e *PipeEndpoint) bool { return e != nil && e.RelayId == relay }
	if err := x.suspendPipes("relay service revoked", func(p *Pipe) bool { return through(p.Source) || through(p.Destination) }); err != nil {
		return err
	}
	return x.revokeServices(func(s *Service) bool { return s.RelayId == relay })
}
