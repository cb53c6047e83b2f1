package govchain

import (
	"context"
	"fmt"
	"strconv"

	"github.com/ccgpmesh/ccgp/crypto"
)

// Participant is one org's side of a consortium: its relay, subchain, app
// and contract, and the keys that act for it.
type Participant struct {
	Org      string
	OrgName  string        // set for orgs that apply for membership
	Admin    crypto.Signer // governor of a genesis org, or the applicant's key
	Relay    string
	Address  string // the relay's QUIC host:port
	TLSCert  []byte // SHA-256 of the relay's TLS certificate (required)
	RelayKey crypto.Signer
	Subchain string
	Kind     string // chain plugin kind
	App      string
	AppKey   crypto.Signer
	Contract string
}

// PipeSpec is a pipe between two participants' contracts.
type PipeSpec struct {
	ID       string
	From, To string // participant orgs
	Mode     ConsistencyMode
	Limits   *PipeLimits
}

// ConsortiumSpec is everything SetupConsortium puts on chain.
type ConsortiumSpec struct {
	// Governors of the genesis orgs; they vote every proposal in.
	Governors    []crypto.Signer
	Participants []Participant
	Pipes        []PipeSpec
}

// SetupConsortium runs the governance processes that make spec true, in
// waves of txs that share blocks: membership applications and votes, the
// cross-chain accounts and votes, services, subchains, apps, contracts,
// pipe applications by the source orgs and authorizations by the
// destination orgs. step is told of each wave. It returns the number of txs.
func SetupConsortium(ctx context.Context, c *Client, spec ConsortiumSpec, step func(string)) (int, error) {
	if step == nil {
		step = func(string) {}
	}
	params, err := c.Params(ctx)
	if err != nil {
		return 0, err
	}
	// Only as many votes as the quorum needs: later ones would find it decided.
	e := uint64(len(spec.Governors))
	need := int(e*uint64(params.QuorumNum)/uint64(params.QuorumDen) + 1)
	if need > len(spec.Governors) {
		return 0, fmt.Errorf("consortium: %d governors cannot reach quorum %d/%d", e, params.QuorumNum, params.QuorumDen)
	}
	n := 0
	run := func(what string, txs []Signed) ([]*TxResult, error) {
		if len(txs) == 0 {
			return nil, nil
		}
		res, err := c.SubmitAll(ctx, txs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		n += len(txs)
		step(fmt.Sprintf("%-34s %3d txs, height %d", what, len(txs), res[len(res)-1].Height))
		return res, nil
	}
	// voteIn has every governor approve the proposals the results opened.
	voteIn := func(what string, res []*TxResult) error {
		var votes []Signed
		for _, r := range res {
			id, err := strconv.ParseUint(r.Attr("proposal", "id"), 10, 64)
			if err != nil {
				return fmt.Errorf("%s: tx opened no proposal", what)
			}
			for _, g := range spec.Governors[:need] {
				votes = append(votes, Signed{g, &MsgVote{ProposalId: id, Approve: true}})
			}
		}
		_, err := run(what, votes)
		return err
	}

	var apps []Signed
	for _, p := range spec.Participants {
		if p.OrgName != "" {
			apps = append(apps, Signed{p.Admin, &MsgApplyOrg{Id: p.Org, Name: p.OrgName}})
		}
	}
	res, err := run("membership applications", apps)
	if err != nil {
		return n, err
	}
	if err := voteIn("votes: admit orgs", res); err != nil {
		return n, err
	}

	var accts []Signed
	for _, p := range spec.Participants {
		accts = append(accts,
			Signed{p.Admin, &MsgProposeAccount{Role: Role_ROLE_CROSSCHAIN, Suite: string(p.RelayKey.Suite()), PublicKey: p.RelayKey.PublicKey(), Name: p.Relay}},
			Signed{p.Admin, &MsgProposeAccount{Role: Role_ROLE_CROSSCHAIN, Suite: string(p.AppKey.Suite()), PublicKey: p.AppKey.PublicKey(), Name: p.App}})
	}
	if res, err = run("cross-chain account proposals", accts); err != nil {
		return n, err
	}
	if err := voteIn("votes: cross-chain accounts", res); err != nil {
		return n, err
	}

	waves := []struct {
		what string
		msg  func(p Participant) Signed
	}{
		{"relay services", func(p Participant) Signed {
			a := crypto.SignerAddress(p.RelayKey)
			return Signed{p.Admin, &MsgRegisterService{RelayId: p.Relay, Address: p.Address, TlsCertSha256: p.TLSCert, Account: a[:]}}
		}},
		{"subchains", func(p Participant) Signed {
			return Signed{p.Admin, &MsgRegisterSubchain{Id: p.Subchain, Kind: p.Kind, RelayId: p.Relay}}
		}},
		{"apps", func(p Participant) Signed {
			a := crypto.SignerAddress(p.AppKey)
			return Signed{p.Admin, &MsgRegisterApp{Id: p.App, Subchain: p.Subchain, Account: a[:]}}
		}},
		{"contracts", func(p Participant) Signed {
			return Signed{p.Admin, &MsgRegisterContract{Id: p.Contract, App: p.App, Address: "0x" + p.Contract}}
		}},
	}
	for _, w := range waves {
		txs := make([]Signed, len(spec.Participants))
		for i, p := range spec.Participants {
			txs[i] = w.msg(p)
		}
		if _, err := run(w.what, txs); err != nil {
			return n, err
		}
	}

	byOrg := map[string]Participant{}
	for _, p := range spec.Participants {
		byOrg[p.Org] = p
	}
	var applies, auths []Signed
	for _, ps := range spec.Pipes {
		from, ok1 := byOrg[ps.From]
		to, ok2 := byOrg[ps.To]
		if !ok1 || !ok2 {
			return n, fmt.Errorf("pipe %s: %s or %s is not a participant", ps.ID, ps.From, ps.To)
		}
		applies = append(applies, Signed{from.Admin, &MsgApplyPipe{Id: ps.ID, SourceContract: from.Contract,
			DestinationOrg: to.Org, DestinationSubchain: to.Subchain, Mode: ps.Mode, Limits: ps.Limits}})
		auths = append(auths, Signed{to.Admin, &MsgAuthorizePipe{Id: ps.ID, DestinationContract: to.Contract}})
	}
	if _, err := run("pipe applications (source orgs)", applies); err != nil {
		return n, err
	}
	if _, err := run("pipe authorizations (dest orgs)", auths); err != nil {
		return n, err
	}
	return n, nil
}
