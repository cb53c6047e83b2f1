package check

import (
	"errors"
	"testing"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

type revokedSet map[crypto.Address]bool

func (r revokedSet) Revoked(a crypto.Address) bool { return r[a] }

func testPipe(app crypto.Signer, status govchain.PipeStatus, maxPayload uint32) *govchain.Pipe {
	a := crypto.SignerAddress(app)
	return &govchain.Pipe{Id: "p1", Status: status, Limits: &govchain.PipeLimits{MaxPayload: maxPayload},
		Source:      &govchain.PipeEndpoint{Org: "org-a", RelayId: "relay-a", Account: a[:], Suite: string(app.Suite()), PublicKey: app.PublicKey()},
		Destination: &govchain.PipeEndpoint{Org: "org-b", RelayId: "relay-b"}}
}

func signed(t *testing.T, s crypto.Signer, payload string) *amdp.Packet {
	t.Helper()
	p := &amdp.Packet{PipeId: "p1", Sequence: 1, Operation: amdp.OpWrite, Payload: []byte(payload), TimeoutHeight: 10}
	if err := amdp.SignPacket(p, s); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPacketCheck: each verdict of the shared stage-1 check, its
// sentinel, its metric label, and whether it names a verified request
// (Forged: dropped as an offence) or an authentic one its pipe refuses
// (compensated).
func TestPacketCheck(t *testing.T) {
	app, mallory := crypto.DevSigner("app-a"), crypto.DevSigner("mallory")
	active := testPipe(app, govchain.PipeStatus_PIPE_ACTIVE, 0)
	ends := Ends{From: "relay-a", To: "relay-b"}
	for _, tc := range []struct {
		name    string
		p       *amdp.Packet
		pipe    *govchain.Pipe
		found   bool
		ends    Ends
		revoked revokedSet
		maxPay  int
		want    error
		label   string
		forged  bool
	}{
		{name: "authentic and admissible", p: signed(t, app, "ok"), pipe: active, found: true, ends: ends},
		{name: "unknown pipe", p: signed(t, app, "x"), found: false, ends: ends, want: ErrUnknownPipe, label: "unknown_pipe", forged: true},
		{name: "another relay's pipe", p: signed(t, app, "x"), pipe: active, found: true, ends: Ends{From: "relay-c"},
			want: ErrWrongSource, label: "wrong_source", forged: true},
		{name: "pipe to another relay", p: signed(t, app, "x"), pipe: active, found: true, ends: Ends{To: "relay-c"},
			want: ErrWrongDestination, label: "wrong_destination", forged: true},
		{name: "credential of another key", p: signed(t, mallory, "x"), pipe: active, found: true, ends: ends,
			want: amdp.ErrBadCredential, label: "bad_credential", forged: true},
		{name: "revoked source account", p: signed(t, app, "x"), pipe: active, found: true, ends: ends,
			revoked: revokedSet{crypto.SignerAddress(app): true}, want: ErrRevokedKey, label: "revoked_key", forged: true},
		{name: "suspended pipe", p: signed(t, app, "x"), pipe: testPipe(app, govchain.PipeStatus_PIPE_SUSPENDED, 0), found: true, ends: ends,
			want: ErrPipeNotActive, label: "pipe_not_active"},
		{name: "proposed pipe", p: signed(t, app, "x"), pipe: testPipe(app, govchain.PipeStatus_PIPE_PROPOSED, 0), found: true, ends: ends,
			want: ErrPipeNotActive, label: "pipe_not_active"},
		{name: "over the pipe's payload limit", p: signed(t, app, "0123456789"), pipe: testPipe(app, govchain.PipeStatus_PIPE_ACTIVE, 4), found: true,
			ends: ends, maxPay: 1 << 10, want: amdp.ErrPayloadTooLarge, label: "payload_too_large"},
		{name: "over the relay's payload limit", p: signed(t, app, "0123456789"), pipe: active, found: true, ends: ends, maxPay: 8,
			want: amdp.ErrPayloadTooLarge, label: "payload_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var accts Accounts
			if tc.revoked != nil {
				accts = tc.revoked
			}
			err := Authentic(tc.p, tc.pipe, tc.found, tc.ends, accts)
			if err == nil {
				err = Admissible(tc.p, tc.pipe, tc.maxPay)
			}
			if err == nil {
				items := []Item{{Packet: tc.p, Pipe: tc.pipe}}
				Signatures(items, nil)
				err = items[0].Err
			}
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if got := Reason(err); got != tc.label {
				t.Errorf("label %q, want %q", got, tc.label)
			}
			if Forged(err) != tc.forged {
				t.Errorf("Forged = %v, want %v", !tc.forged, tc.forged)
			}
		})
	}
}

// TestSignaturesFindsTheForgedOne: in a batch of good signatures, one
// tampered packet is found and refused, the others pass.
func TestSignaturesFindsTheForgedOne(t *testing.T) {
	app := crypto.DevSigner("app-a")
	pipe := testPipe(app, govchain.PipeStatus_PIPE_ACTIVE, 0)
	items := make([]Item, 16)
	for i := range items {
		items[i] = Item{Packet: signed(t, app, string(rune('a'+i))), Pipe: pipe}
	}
	items[7].Packet.Payload = []byte("tampered after signing")
	Signatures(items, crypto.NewKeyCache(16))
	for i, it := range items {
		if (i == 7) != (it.Err != nil) {
			t.Fatalf("item %d: %v", i, it.Err)
		}
	}
	if !errors.Is(items[7].Err, amdp.ErrBadSignature) || !Forged(items[7].Err) {
		t.Fatalf("tampered packet: %v", items[7].Err)
	}
}
