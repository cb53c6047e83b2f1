package mesh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// hostileNet is one row's consortium: relay-b receives (its offences
// recorded), relay-a and relay-c send; pipes ab-1 (a to b), cb-1 (c to
// b), ab-susp (suspended).
type hostileNet struct {
	n       *testNet
	a, b, c *Endpoint
	offs    *offenceRecorder
}

type offenceRecorder struct {
	mu   sync.Mutex
	recs []offence.Record
}

func (r *offenceRecorder) Report(rec offence.Record) {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
}

func (r *offenceRecorder) reasons() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		out = append(out, rec.Reason)
	}
	return out
}

// proofs is, per record, "proven" or "claimed" (offence.Record.Proven).
func (r *offenceRecorder) proofs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		out = append(out, map[bool]string{true: "proven", false: "claimed"}[rec.Proven])
	}
	return out
}

// meshHostileRow is one attack on a receiving relay over QUIC with mTLS,
// in the shape of the relay package's table. attack returns the reason
// label the attack met (a RemoteError's, an AuthError's or a REJECTED
// receipt's) and the error the sender saw.
type meshHostileRow struct {
	name   string
	reason string // the rejection's label, counted in ccgp_mesh_rejected_total{reason} at counter
	want   error  // errors.Is(err, want); nil: the batch is answered, the packet refused
	// offence is how the attack is reported to the offence log, once:
	// "proven" (a packet the authenticated peer forwarded in a batch it
	// signed), "claimed" (a whole batch or a handshake refused: not
	// checkable by a third party), or "" for none (a real request the
	// pipe refuses is no offence).
	offence string
	// sees is the label the attacker gets back, when it differs from the
	// one counted (a refused handshake tells the peer only auth_refused).
	sees string
	// counter is the endpoint that counts the rejection: relay-b unless
	// the sender is the one refusing (a bad answer).
	counter func(h *hostileNet) *Endpoint
	attack  func(t *testing.T, h *hostileNet) (reason string, err error)
}

// TestHostileInputs throws forged, malformed and replayed traffic at a
// receiving relay through real QUIC endpoints with mutual TLS. Each row
// is refused with its reason and counted by it; the destination chain
// executes nothing because of it (a replay executes nothing twice); no
// goroutine outlives the row's endpoints; and relay-b serves a good batch
// afterwards.
func TestHostileInputs(t *testing.T) {
	mallory := crypto.DevSigner("mallory")
	batchErr := func(h *hostileNet, via *Endpoint, b *amdp.Batch) (string, error) {
		_, err := via.Send(ctxT(t, 10*time.Second), "relay-b", b)
		return remoteReason(err), err
	}
	frameErr := func(h *hostileNet, frame []byte) (string, error) {
		_, err := h.a.roundTrip(ctxT(t, 10*time.Second), "relay-b", frame)
		return remoteReason(err), err
	}
	// packetErr sends one packet in a good batch and returns its receipt's
	// reason label.
	packetErr := func(t *testing.T, h *hostileNet, via string, p *amdp.Packet) (string, error) {
		res, err := h.n.relays[via].ep.Send(ctxT(t, 10*time.Second), "relay-b", h.n.batch(via, "relay-b", 1, p))
		if err != nil {
			return "", err
		}
		r := res.Receipts[0]
		if r.Status != amdp.StatusRejected {
			return "delivered", nil
		}
		label, _, _ := bytes.Cut([]byte(r.Reason), []byte(": "))
		return string(label), nil
	}
	rows := []meshHostileRow{
		{name: "forged relay signature on a batch", offence: "claimed", reason: "bad_signature", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				return batchErr(h, h.a, sealBatch(t, mallory, "relay-a", "relay-b", 1, h.n.packets("ab-1", 2, 10)))
			}},
		{name: "wrong Merkle root", offence: "claimed", reason: "merkle_root", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				b := h.n.batch("relay-a", "relay-b", 1, h.n.packets("ab-1", 3, 10)...)
				b.Packets[1] = h.n.packet("ab-1", []byte("swapped in after sealing"))
				return batchErr(h, h.a, b)
			}},
		{name: "truncated frame", offence: "claimed", reason: "short_frame", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				f := encodeFrame(t, h.n.batch("relay-a", "relay-b", 1, h.n.packet("ab-1", []byte("cut"))))
				return frameErr(h, f[:len(f)/2])
			}},
		{name: "garbage frame (unknown kind)", offence: "claimed", reason: "bad_frame", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) { return frameErr(h, []byte("\x09\x00\x03abc")) }},
		{name: "garbage frame (body not protobuf)", offence: "claimed", reason: "malformed", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				return frameErr(h, []byte("\x01\x00\x0bhello world"))
			}},
		{name: "oversized frame (declared 1 GiB)", offence: "claimed", reason: "batch_too_large", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				return frameErr(h, binary.AppendUvarint([]byte{1, 0}, 1<<30))
			}},
		{name: "zstd bomb (declared size)", offence: "claimed", reason: "decompressed_too_large", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) { return frameErr(h, zstdBomb(t, true)) }},
		{name: "zstd bomb (size not declared)", offence: "claimed", reason: "decompressed_too_large", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) { return frameErr(h, zstdBomb(t, false)) }},
		{name: "oversized payload (over the relay's 64 KiB)", offence: "claimed", reason: "payload_too_large", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				return batchErr(h, h.a, h.n.batch("relay-a", "relay-b", 1, h.n.packet("ab-1", make([]byte, 64<<10+1))))
			}},
		{name: "oversized payload (over the pipe's limit)", reason: "payload_too_large",
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				return packetErr(t, h, "relay-a", h.n.packet("ab-small", make([]byte, 101)))
			}},
		{name: "forged app signature", reason: "bad_signature", offence: "proven",
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				p := h.n.packet("ab-1", []byte("signed"))
				p.Payload = []byte("changed after signing")
				return packetErr(t, h, "relay-a", p)
			}},
		{name: "app key not the pipe's (attacker's credential)", reason: "bad_credential", offence: "claimed",
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				p := &amdp.Packet{PipeId: "ab-1", Sequence: 77, Operation: amdp.OpWrite, Payload: []byte("x"), TimeoutHeight: 1_000_000}
				if err := amdp.SignPacket(p, crypto.DevSigner("mallory-app")); err != nil {
					t.Fatal(err)
				}
				return packetErr(t, h, "relay-a", p)
			}},
		{name: "another org's pipe", reason: "wrong_source", offence: "claimed",
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				return packetErr(t, h, "relay-a", h.n.packet("cb-1", []byte("relay-c's pipe, sent by relay-a")))
			}},
		{name: "unknown pipe", reason: "unknown_pipe", offence: "claimed",
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				return packetErr(t, h, "relay-a", h.n.packet("no-such-pipe", []byte("u")))
			}},
		{name: "suspended pipe", reason: "pipe_not_active",
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				return packetErr(t, h, "relay-a", h.n.packet("ab-susp", []byte("s")))
			}},
		{name: "unregistered relay certificate", offence: "claimed", reason: "unknown_relay", sees: "auth_refused", want: ErrAuthRefused,
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				h.n.addRelay("relay-d")
				d := h.n.start("relay-d", sendOnly)
				h.n.reg.mu.Lock()
				delete(h.n.reg.services, "relay-d")
				h.n.reg.mu.Unlock()
				return batchErr(h, d, h.n.batch("relay-d", "relay-b", 1, h.n.packet("ab-1", nil)))
			}},
		{name: "certificate from another CA", offence: "claimed", reason: "untrusted_cert", sees: "auth_refused", want: ErrAuthRefused,
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				rogueCA, err := crypto.NewDevCA("rogue CA")
				if err != nil {
					t.Fatal(err)
				}
				rogue, err := rogueCA.Issue("relay-a", nil)
				if err != nil {
					t.Fatal(err)
				}
				h.n.addRelay("relay-d")
				r := h.n.start("relay-d", sendOnly, func(c *Config) { c.RelayID, c.Certificate = "relay-a", rogue })
				return batchErr(h, r, h.n.batch("relay-a", "relay-b", 1, h.n.packet("ab-1", nil)))
			}},
		{name: "revoked relay account", offence: "claimed", reason: "no_relay_key", want: ErrBatchRejected,
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				addr := crypto.SignerAddress(h.n.relays["relay-a"].signer)
				h.n.reg.mu.Lock()
				acct := h.n.reg.accounts[addr]
				h.n.reg.accounts[addr] = &govchain.Account{Address: acct.Address, Org: acct.Org, Role: acct.Role, Suite: acct.Suite,
					PublicKey: acct.PublicKey, Status: govchain.AccountStatus_ACCOUNT_REVOKED}
				h.n.reg.mu.Unlock()
				reason, err := batchErr(h, h.a, h.n.batch("relay-a", "relay-b", 1, h.n.packet("ab-1", nil)))
				h.n.reg.mu.Lock()
				h.n.reg.accounts[addr] = acct // so that stillServes can check relay-b
				h.n.reg.mu.Unlock()
				return reason, err
			}},
		{name: "forged receipt signature (receiver signs with another key)", reason: "bad_receipts", want: ErrBadReceipts,
			counter: func(h *hostileNet) *Endpoint { return h.c },
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				// relay-c sends to a relay-b impostor: relay-b's
				// certificate, but receipts signed by another key.
				h.n.addRelay("relay-e")
				h.n.addPipe("cb-e", "relay-c", "relay-e")
				lying := h.n.start("relay-e", func(c *Config) { c.Signer = mallory })
				_ = lying
				_, err := h.c.Send(ctxT(t, 10*time.Second), "relay-e", h.n.batch("relay-c", "relay-e", 1, h.n.packet("cb-e", []byte("x"))))
				return Reason(err), err
			}},
		// Work in flight at a key rotation (DESIGN §3): the receiver's
		// view has the new key before the batch arrives.
		{name: "app key rotated while its packet was in flight", reason: "bad_credential", offence: "claimed",
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				h.n.addPipe("ab-rot", "relay-a", "relay-b")
				p := h.n.packet("ab-rot", []byte("signed under the old key"))
				rotated := crypto.DevSigner("app-after-rotation")
				h.n.addPipe("ab-rot", "relay-a", "relay-b", func(pp *govchain.Pipe) {
					pp.Source.Suite, pp.Source.PublicKey = string(rotated.Suite()), rotated.PublicKey()
				})
				return packetErr(t, h, "relay-a", p)
			}},
		{name: "relay key rotated while its batch was in flight", reason: "bad_signature", want: ErrBatchRejected, offence: "claimed",
			attack: func(t *testing.T, h *hostileNet) (string, error) {
				b := h.n.batch("relay-a", "relay-b", 1, h.n.packet("ab-1", []byte("sealed under the old key")))
				addr := crypto.SignerAddress(h.n.relays["relay-a"].signer)
				rotated := crypto.DevSigner("relay-a-after-rotation")
				h.n.reg.mu.Lock()
				acct := h.n.reg.accounts[addr]
				h.n.reg.accounts[addr] = &govchain.Account{Address: acct.Address, Org: acct.Org, Role: acct.Role, Status: acct.Status,
					Suite: string(rotated.Suite()), PublicKey: rotated.PublicKey(), KeyHeight: 9}
				h.n.reg.mu.Unlock()
				reason, err := batchErr(h, h.a, b)
				h.n.reg.mu.Lock()
				h.n.reg.accounts[addr] = acct // so that stillServes can send as relay-a
				h.n.reg.mu.Unlock()
				return reason, err
			}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // first registered: runs after the endpoints close
			h := newHostileNet(t)
			counter := h.b
			if row.counter != nil {
				counter = row.counter(h)
			}
			before := rejectedOrSendErr(t, counter, row.reason)
			reason, err := row.attack(t, h)
			sees := row.sees
			if sees == "" {
				sees = row.reason
			}
			if reason != sees || (row.want == nil) != (err == nil) || (row.want != nil && !errors.Is(err, row.want)) {
				t.Fatalf("got reason %q, err %v; want reason %q, err %v", reason, err, sees, row.want)
			}
			if got := rejectedOrSendErr(t, counter, row.reason); got != before+1 {
				t.Errorf("%s counted %v times, want once", row.reason, got-before)
			}
			if _, _, executed := h.n.relays["relay-b"].chain.counts(); executed != 0 {
				t.Errorf("relay-b's chain executed %d packets", executed)
			}
			offs, proofs := h.offs.reasons(), h.offs.proofs()
			switch {
			case row.offence != "" && (len(offs) != 1 || offs[0] != row.reason || proofs[0] != row.offence):
				t.Errorf("offences %v (%v), want one %s (%s)", offs, proofs, row.reason, row.offence)
			case row.offence == "" && len(offs) != 0:
				t.Errorf("offences %v, want none", offs)
			}
			stillServes(t, h.n, h.a, 100)
			t.Logf("refused: %s: %v", reason, err)
		})
	}

	// The fair-receiver rows (fair_test.go): each refuses the attack
	// with its reason, counts it, executes nothing because of it and
	// checks for leaked goroutines itself.
	t.Run("slow-loris peer", hostileSlowLoris)
	t.Run("peer opening connections in a loop", hostileConnectionLoop)
	t.Run("peer over its connections", hostileConnectionsPerPeer)
	t.Run("revoked relay's open connection", hostileRevokedPeer)
	t.Run("replayed batch", func(t *testing.T) {
		leaks := goleak.IgnoreCurrent()
		t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
		h := newHostileNet(t)
		b := h.n.batch("relay-a", "relay-b", 1, h.n.packets("ab-1", 3, 10)...)
		first, err := h.a.Send(ctxT(t, 10*time.Second), "relay-b", b)
		if err != nil {
			t.Fatal(err)
		}
		again, err := h.a.Send(ctxT(t, 10*time.Second), "relay-b", b)
		if err != nil {
			t.Fatal(err)
		}
		checkReplay(t, h, b.Packets, first.Receipts, again.Receipts)
	})
	t.Run("replayed packet in a new batch", func(t *testing.T) {
		leaks := goleak.IgnoreCurrent()
		t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
		h := newHostileNet(t)
		ps := h.n.packets("ab-1", 2, 10)
		first, err := h.a.Send(ctxT(t, 10*time.Second), "relay-b", h.n.batch("relay-a", "relay-b", 1, ps...))
		if err != nil {
			t.Fatal(err)
		}
		again, err := h.a.Send(ctxT(t, 10*time.Second), "relay-b", h.n.batch("relay-a", "relay-b", 2, ps...))
		if err != nil {
			t.Fatal(err)
		}
		checkReplay(t, h, ps, first.Receipts, again.Receipts)
	})
}

// checkReplay: the replay is answered from the delivery record (the same
// receipts), counted as suppressed duplicates, and executes nothing twice.
func checkReplay(t *testing.T, h *hostileNet, ps []*amdp.Packet, first, again []*amdp.Receipt) {
	t.Helper()
	chain := h.n.relays["relay-b"].chain
	for i, p := range ps {
		if n := chain.execCount(p.ID()); n != 1 {
			t.Errorf("packet %d executed %d times", i, n)
		}
		if !proto.Equal(first[i], again[i]) {
			t.Errorf("packet %d: replay answered %v, first %v", i, again[i], first[i])
		}
	}
	if got := value(t, h.b.m.duplicates); got != float64(len(ps)) {
		t.Errorf("duplicates suppressed %v, want %d", got, len(ps))
	}
	if offs := h.offs.reasons(); len(offs) != 0 {
		t.Errorf("a replay of authentic packets is no offence: %v", offs)
	}
}

func newHostileNet(t *testing.T) *hostileNet {
	n := newTestNet(t, "relay-a", "relay-b", "relay-c")
	n.addPipe("ab-1", "relay-a", "relay-b")
	n.addPipe("cb-1", "relay-c", "relay-b")
	n.addPipe("ab-susp", "relay-a", "relay-b", func(p *govchain.Pipe) { p.Status = govchain.PipeStatus_PIPE_SUSPENDED })
	n.addPipe("ab-small", "relay-a", "relay-b", func(p *govchain.Pipe) { p.Limits.MaxPayload = 100 })
	h := &hostileNet{n: n, offs: &offenceRecorder{}}
	h.b = n.start("relay-b", func(c *Config) { c.Offences = h.offs })
	h.a = n.start("relay-a", sendOnly)
	h.c = n.start("relay-c", sendOnly)
	return h
}

// remoteReason is the reason label of a refusal as the sender sees it.
func remoteReason(err error) string {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Reason
	}
	return Reason(err)
}

// rejectedOrSendErr reads ep's count of reason: the receiver's rejected
// counter, or, for a sender refusing an answer, its send errors.
func rejectedOrSendErr(t *testing.T, ep *Endpoint, reason string) float64 {
	t.Helper()
	return value(t, ep.m.rejected.WithLabelValues(reason)) + value(t, ep.m.sendErrors.WithLabelValues(reason))
}

// zstdBomb is a batch frame whose body is one zstd frame of 64 MiB of
// zeros, about 2 KiB on the wire: with its content size declared in the
// zstd header, or streamed without it.
func zstdBomb(t *testing.T, declared bool) []byte {
	t.Helper()
	zeros := make([]byte, 64<<20)
	var body []byte
	if declared {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			t.Fatal(err)
		}
		body = enc.EncodeAll(zeros, nil)
		enc.Close()
	} else {
		var buf bytes.Buffer
		enc, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithSingleSegment(false))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := enc.Write(zeros); err != nil {
			t.Fatal(err)
		}
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
		body = buf.Bytes()
	}
	f := binary.AppendUvarint([]byte{byte(amdp.FrameBatch), 1}, uint64(len(body)))
	return append(f, body...)
}
