package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// lyingPrefix marks payloads that org-2's relay executes and then answers
// REJECTED for: a destination that lies about a refusal.
const lyingPrefix = "LIE "

// lyingChain is org-2's chain as its relay sees it: it delivers as asked,
// and reports a refusal for what it executed with lyingPrefix.
type lyingChain struct{ subchain.Chain }

func (l lyingChain) Deliver(ctx context.Context, ps []*amdp.Packet) ([]subchain.Delivery, error) {
	ds, err := l.Chain.Deliver(ctx, ps)
	for i := range ds {
		if i < len(ps) && bytes.HasPrefix(ps[i].Payload, []byte(lyingPrefix)) && ds[i].Status == amdp.StatusDelivered {
			ds[i].Status, ds[i].Reason, ds[i].ResultHash = amdp.StatusRejected, "contract refused (a lie)", [32]byte{}
		}
	}
	return ds, err
}

// relayHostile is the shared platform of the relay rows.
type relayHostile struct {
	c   *bench.Cluster
	ctx context.Context
}

// relayHostileRow is one attack on the whole platform, in the shape the
// mesh and govchain tables share: what is done, the offence it must be
// counted as (reason, stage: the offenders topic, which the relays also
// count in ccgp_offences_total), and the row's own check that nothing
// happened because of it. Every row also checks that no source chain
// rolled anything back and governance recorded no rollback.
type relayHostileRow struct {
	name   string
	reason string // offence reason, "" when the row checks its own refusal
	stage  string
	org    string // the org the offence must name, when set
	// proven: the record must say its evidence ties it to the named
	// relay (offence.Record.Proven); the router's records never do.
	proven bool
	// attack returns the pipe and sequence the offence names.
	attack func(t *testing.T, h *relayHostile) (pipe string, seq uint64)
	// after checks the row's own refusal and that nothing executed.
	after func(t *testing.T, h *relayHostile, pipe string, seq uint64)
	// bug, when set, is a finding this row exposes: it is skipped with
	// that text until the code is fixed (remove it to see the failure).
	bug string
}

// TestHostileInputs is the hostile-input table on the whole platform: an
// embedded Kafka broker (kfake), the relays over QUIC with mTLS, the
// in-process governance node and simulated subchains. One cluster serves
// every row, in order (the last rows revoke and rotate keys); goroutines
// are checked once the cluster has closed.
func TestHostileInputs(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	// Registered before the cluster: runs after its Close. The listed
	// functions are what LocalNode.Stop is known to leave (a finding,
	// see govchain's TestHostileInputs); anything else fails.
	t.Cleanup(func() { goleak.VerifyNone(t, append(knownNodeLeaks(), leaks)...) })
	c := startCluster(t, func(o *bench.ClusterOptions) {
		o.WrapChain = func(org string, ch subchain.Chain, _ *govchain.Client) subchain.Chain {
			if org == "org-2" {
				return lyingChain{ch}
			}
			return ch
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 170*time.Second)
	defer cancel()
	h := &relayHostile{c: c, ctx: ctx}

	// Real traffic first, so that forgeries can name delivered sequences.
	sendOn(ctx, t, c, "pipe-1-2", 5, func(i int) string { return fmt.Sprintf("real #%d", i) })
	sendOn(ctx, t, c, "pipe-2-1", 3, func(i int) string { return fmt.Sprintf("real #%d", i) })
	sendOn(ctx, t, c, "pipe-4-1", 3, func(i int) string { return fmt.Sprintf("real #%d", i) })
	hostileSettled(t, h, "pipe-1-2", 3)

	attacker := crypto.DevSigner("attacker")
	// packet is a packet on pipe with the app's credential of signer cred,
	// signed by key.
	packet := func(pipe string, seq uint64, cred, key crypto.Signer) *amdp.Packet {
		a := crypto.SignerAddress(cred)
		p := &amdp.Packet{PipeId: pipe, Sequence: seq, Operation: amdp.OpWrite, Payload: []byte("forged"),
			TimeoutUnixMs: uint64(time.Now().Add(time.Minute).UnixMilli()),
			Credential:    &amdp.Credential{Signer: a[:], Suite: string(cred.Suite())}}
		sig, err := key.Sign(amdp.PacketSigningBytes(p))
		if err != nil {
			t.Fatal(err)
		}
		p.Signature = sig
		return p
	}
	delivered := func(t *testing.T, h *relayHostile, pipe string, seq uint64) {
		hostileSettled(t, h, pipe, seq)
	}
	rows := []relayHostileRow{
		{name: "forged record in the events topic (bad app signature) for a delivered sequence", reason: "bad_signature", stage: offence.StageRouter,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				forge(ctx, t, c, "org-1", packet("pipe-1-2", 3, c.Apps["pipe-1-2"].Signer, attacker))
				return "pipe-1-2", 3
			}, after: delivered},
		{name: "forged record for a sequence not yet sent", reason: "bad_signature", stage: offence.StageRouter,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				forge(ctx, t, c, "org-1", packet("pipe-1-2", 6, c.Apps["pipe-1-2"].Signer, attacker))
				return "pipe-1-2", 6
			}, after: func(t *testing.T, h *relayHostile, pipe string, seq uint64) {
				// The real request 6 arrives after the forgery and is
				// delivered: no rollback was left pending for it.
				sendOn(ctx, t, c, pipe, 1, func(int) string { return "real #5, after its forgery" })
				delivered(t, h, pipe, seq)
			}},
		{name: "forged record with the attacker's own credential", reason: "bad_credential", stage: offence.StageRouter,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				forge(ctx, t, c, "org-1", packet("pipe-1-2", 2, attacker, attacker))
				return "pipe-1-2", 2
			}, after: delivered},
		{name: "another org's pipe written into this relay's events topic", reason: "wrong_source", stage: offence.StageRouter,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				app2 := c.Apps["pipe-2-1"].Signer // authentic for pipe-2-1, but routed by org-1's relay
				forge(ctx, t, c, "org-1", packet("pipe-2-1", 900, app2, app2))
				return "pipe-2-1", 900
			}, after: notExecuted("org-1")},
		{name: "unknown pipe", reason: "unknown_pipe", stage: offence.StageRouter,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				forge(ctx, t, c, "org-1", packet("pipe-none", 1, attacker, attacker))
				return "pipe-none", 1
			}},
		{name: "destination lies with a REJECTED receipt for a packet it executed", reason: "false_refusal", stage: offence.StageCompensator, org: "org-2", proven: true,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				p, err := c.Apps["pipe-1-2"].Send(ctx, []byte(lyingPrefix+"executed, answered refused"))
				if err != nil {
					t.Fatal(err)
				}
				return p.PipeId, p.Sequence
			}, after: func(t *testing.T, h *relayHostile, pipe string, seq uint64) {
				waitUntil(t, 60*time.Second, func() string { return fmt.Sprintf("%s/%d is %v", pipe, seq, state(ctx, t, c, pipe, seq)) }, func() bool {
					return state(ctx, t, c, pipe, seq) == govchain.PacketState_PACKET_MANUAL
				})
				d, ok, err := c.Chains["org-2"].FindDelivery(ctx, amdp.PacketID(pipe, seq))
				if err != nil || !ok || d.Status != amdp.StatusDelivered {
					t.Fatalf("the destination chain's record: %v %v %v", d, ok, err)
				}
			}},
		{name: "expired packet (timeout_unix_ms passed) at the destination", reason: "",
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				app := c.Apps["pipe-1-2"].Signer
				p := &amdp.Packet{PipeId: "pipe-1-2", Sequence: 800, Operation: amdp.OpWrite, Payload: []byte("late"),
					TimeoutUnixMs: uint64(time.Now().Add(-time.Second).UnixMilli())}
				if err := amdp.SignPacket(p, app); err != nil {
					t.Fatal(err)
				}
				dst := c.Chains["org-2"]
				before := dst.Stats()
				ds, err := dst.Deliver(ctx, []*amdp.Packet{p}) // as a lagging relay would hand it over
				if err != nil {
					t.Fatal(err)
				}
				if ds[0].Status != amdp.StatusTimedOut {
					t.Fatalf("expired packet: %v, want TIMED_OUT", ds[0].Status)
				}
				if s := dst.Stats(); s.Delivered != before.Delivered || s.TimedOut != before.TimedOut+1 {
					t.Fatalf("destination chain: %+v, before %+v", s, before)
				}
				return p.PipeId, p.Sequence
			}},
		{name: "replayed packet (a delivered request's own record, written again)", reason: "sequence_replay", stage: offence.StageRouter,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				p, err := c.Apps["pipe-1-2"].Send(ctx, []byte("real, to be replayed"))
				if err != nil {
					t.Fatal(err)
				}
				hostileSettled(t, h, p.PipeId, p.Sequence)
				forge(ctx, t, c, "org-1", p)
				return p.PipeId, p.Sequence
			}, after: func(t *testing.T, h *relayHostile, pipe string, seq uint64) {
				if d := c.Chains["org-2"].Stats().Duplicates; d != 0 {
					t.Fatalf("the destination executed %d duplicates", d)
				}
			}},
		{name: "malformed record in the events topic", reason: "malformed", stage: offence.StageRouter,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				forgeRaw(ctx, t, c, "org-1", []byte("\x0a\xff\xff garbage"))
				return "", 0
			}},
		{name: "revoked app key", reason: "revoked_key", stage: offence.StageRouter,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				// org-4's operator revokes its app account; the key's
				// holder still writes packets signed by it.
				app := c.Apps["pipe-4-1"].Signer
				a := crypto.SignerAddress(app)
				if _, err := c.Gov.Submit(ctx, crypto.DevSigner("admin-org-4"), &govchain.MsgRevokeAccount{Account: a[:], Reason: "key leaked"}); err != nil {
					t.Fatal(err)
				}
				waitCache(t, h, "org-4", func(k *govchain.Cache) bool {
					p, ok := k.Pipe("pipe-4-1")
					return ok && p.Status != govchain.PipeStatus_PIPE_ACTIVE
				})
				// The next sequence: a request the app never made, signed
				// with the leaked key after its revocation.
				forge(ctx, t, c, "org-4", packet("pipe-4-1", 4, app, app))
				return "pipe-4-1", 4
			}, after: func(t *testing.T, h *relayHostile, pipe string, seq uint64) {
				notExecuted("org-1")(t, h, pipe, seq)
				// A request the app never made leaves no record.
				if st := state(ctx, t, c, pipe, seq); st != govchain.PacketState_PACKET_STATE_UNSPECIFIED {
					t.Fatalf("governance records %s/%d as %v", pipe, seq, st)
				}
			},
		},
		{name: "rotated-out app key used after its rotation height", reason: "bad_credential", stage: offence.StageRouter,
			attack: func(t *testing.T, h *relayHostile) (string, uint64) {
				old, next := c.Apps["pipe-2-1"].Signer, crypto.DevSigner("app-org-2-next")
				a := crypto.SignerAddress(old)
				acct, err := c.Gov.Account(ctx, a)
				if err != nil {
					t.Fatal(err)
				}
				m, err := govchain.NewRotateKey(c.Gov.ChainID(), a, acct.Nonce+1, next)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Gov.Submit(ctx, old, m); err != nil {
					t.Fatal(err)
				}
				waitCache(t, h, "org-2", func(k *govchain.Cache) bool {
					p, ok := k.Pipe("pipe-2-1")
					return ok && bytes.Equal(p.Source.PublicKey, next.PublicKey())
				})
				forge(ctx, t, c, "org-2", packet("pipe-2-1", 4, old, old))
				return "pipe-2-1", 4
			}, after: notExecuted("org-1")},
		// The lead's rows go here, in the same shape: a slow-loris peer, a
		// peer opening connections in a loop, a revoked relay's open
		// connection.
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if row.bug != "" {
				t.Skip("BUG: " + row.bug)
			}
			rolledBefore := hostileRolledBack(c)
			exBefore := len(exceptions(t, c, govchain.PacketState_PACKET_ROLLED_BACK))
			offsBefore := offences(ctx, t, c)
			pipe, seq := row.attack(t, h)
			if row.stage != "" {
				var got []offence.Record
				waitUntil(t, 60*time.Second, func() string { return fmt.Sprintf("offences %+v", got) }, func() bool {
					got = newOffences(offsBefore, offences(ctx, t, c), row.stage, pipe, seq)
					return len(got) > 0
				})
				for _, o := range got {
					if row.reason != "" && o.Reason != row.reason {
						t.Errorf("offence %s at %s, want %s", o.Reason, o.Stage, row.reason)
					}
					if row.org != "" && o.Org != row.org {
						t.Errorf("offence against org %q, want %q", o.Org, row.org)
					}
					if o.Proven != row.proven {
						t.Errorf("offence proven %v, want %v", o.Proven, row.proven)
					}
					t.Logf("offence: %s/%s at %s against %s/%s: %s", o.Reason, o.Stage, o.Reporter, o.Org, o.Relay, o.Detail)
				}
			}
			if row.after != nil {
				row.after(t, h, pipe, seq)
			}
			if rb := hostileRolledBack(c); rb != rolledBefore {
				t.Errorf("source chains rolled back %d requests because of it", rb-rolledBefore)
			}
			if ex := len(exceptions(t, c, govchain.PacketState_PACKET_ROLLED_BACK)); ex != exBefore {
				t.Errorf("governance recorded %d rollbacks because of it", ex-exBefore)
			}
		})
	}
}

// hostileSettled waits until pipe/seq is delivered or confirmed on the
// governance chain, with the destination chain's record saying DELIVERED.
func hostileSettled(t *testing.T, h *relayHostile, pipe string, seq uint64) {
	t.Helper()
	waitUntil(t, 60*time.Second, func() string { return fmt.Sprintf("%s/%d is %v", pipe, seq, state(h.ctx, t, h.c, pipe, seq)) }, func() bool {
		s := state(h.ctx, t, h.c, pipe, seq)
		return s == govchain.PacketState_PACKET_DELIVERED || s == govchain.PacketState_PACKET_CONFIRMED
	})
}

// notExecuted checks that org's chain has no execution of pipe/seq.
func notExecuted(org string) func(t *testing.T, h *relayHostile, pipe string, seq uint64) {
	return func(t *testing.T, h *relayHostile, pipe string, seq uint64) {
		if d, ok, err := h.c.Chains[org].FindDelivery(h.ctx, amdp.PacketID(pipe, seq)); err != nil || ok {
			t.Fatalf("%s's chain executed %s/%d: %v %v", org, pipe, seq, d, err)
		}
	}
}

func waitCache(t *testing.T, h *relayHostile, org string, cond func(*govchain.Cache) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	if err := h.c.Relay(org).Cache().WaitFor(ctx, cond); err != nil {
		t.Fatalf("%s's relay never saw the change: %v", org, err)
	}
}

func hostileRolledBack(c *bench.Cluster) int {
	n := 0
	for _, ch := range c.Chains {
		n += int(ch.Stats().RolledBack)
	}
	return n
}

// newOffences are the records in after beyond before at stage naming
// pipe/seq (any pipe when pipe is empty).
func newOffences(before, after []offence.Record, stage, pipe string, seq uint64) []offence.Record {
	var out []offence.Record
	for _, o := range after[len(before):] {
		if o.Stage == stage && (pipe == "" || (o.Pipe == pipe && o.Seq == seq)) {
			out = append(out, o)
		}
	}
	return out
}

// forgeRaw writes raw bytes into org's events topic.
func forgeRaw(ctx context.Context, t *testing.T, c *bench.Cluster, org string, raw []byte) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: c.EventsTopic(org), Value: raw}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// knownNodeLeaks are the goroutines LocalNode.Stop leaves behind.
func knownNodeLeaks() []goleak.Option {
	var out []goleak.Option
	for _, f := range govchain.StopLeftovers() {
		out = append(out, goleak.IgnoreAnyFunction(f))
	}
	return out
}
