package mesh

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// threeRelays: relay-b receives; relay-a and relay-c send; pipe ab-1 leads
// from a to b.
func threeRelays(t *testing.T) (n *testNet, a, b, c *Endpoint) {
	n = newTestNet(t, "relay-a", "relay-b", "relay-c")
	n.addPipe("ab-1", "relay-a", "relay-b")
	b = n.start("relay-b")
	a = n.start("relay-a", sendOnly)
	c = n.start("relay-c", sendOnly)
	return n, a, b, c
}

// stillServes checks that b delivers a good batch after whatever the test
// threw at it.
func stillServes(t *testing.T, n *testNet, a *Endpoint, seq uint64) {
	t.Helper()
	res, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", seq, n.packet("ab-1", []byte("after"))))
	if err != nil {
		t.Fatalf("relay-b stopped serving: %v", err)
	}
	if res.Receipts[0].Status != amdp.StatusDelivered {
		t.Fatalf("good packet not delivered: %v", res.Receipts[0])
	}
}

func encodeFrame(t *testing.T, b *amdp.Batch) []byte {
	t.Helper()
	f, err := amdp.EncodeFrame(nil, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRejectBatch throws whole-batch faults at relay-b: each is answered
// with an error frame naming its reason, counted, and delivers nothing.
func TestRejectBatch(t *testing.T) {
	n, a, b, c := threeRelays(t)
	chain := n.relays["relay-b"].chain
	mallory := crypto.DevSigner("mallory")

	badRoot := n.batch("relay-a", "relay-b", 2, n.packets("ab-1", 3, 10)...)
	badRoot.Packets[1] = n.packet("ab-1", []byte("swapped in after sealing"))

	receiptFrame := func() []byte {
		id := amdp.PacketID("ab-1", 1)
		rb := &amdp.ReceiptBatch{Header: &amdp.ReceiptBatchHeader{FromRelay: "relay-a", ToRelay: "relay-b", BatchSeq: 1},
			Receipts: []*amdp.Receipt{{PacketId: id[:], Status: amdp.StatusRejected}}}
		if err := amdp.SealReceiptBatch(rb, n.relays["relay-a"].signer); err != nil {
			t.Fatal(err)
		}
		f, err := amdp.EncodeReceiptFrame(nil, rb, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}()
	huge := binary.AppendUvarint([]byte{1, 0}, 1<<30)

	cases := []struct {
		name   string
		via    *Endpoint // sends raw frame bytes when frame is set, else batch with Send
		batch  *amdp.Batch
		frame  []byte
		reason string
	}{
		{name: "bad relay signature", via: a, batch: sealBatch(t, mallory, "relay-a", "relay-b", 1, n.packets("ab-1", 2, 10)), reason: "bad_signature"},
		{name: "bad merkle root", via: a, batch: badRoot, reason: "merkle_root"},
		{name: "wrong to_relay", via: a, frame: encodeFrame(t, n.batch("relay-a", "relay-c", 3, n.packet("ab-1", nil))), reason: "wrong_to_relay"},
		{name: "from_relay is not the TLS peer", via: c, frame: encodeFrame(t, n.batch("relay-a", "relay-b", 4, n.packet("ab-1", nil))), reason: "wrong_from_relay"},
		{name: "unknown frame kind", via: a, frame: []byte("\x09\x00\x03abc"), reason: "bad_frame"},
		{name: "not protobuf", via: a, frame: []byte("\x01\x00\x05hello"), reason: "malformed"},
		{name: "truncated body", via: a, frame: []byte("\x01\x00\x64short"), reason: "short_frame"},
		{name: "empty stream", via: a, frame: []byte{}, reason: "short_frame"},
		{name: "oversized frame", via: a, frame: huge, reason: "batch_too_large"},
		{name: "receipt frame", via: a, frame: receiptFrame, reason: "unexpected_frame"},
		{name: "error frame", via: a, frame: appendErrorFrame(nil, classRejected, "x", "y"), reason: "bad_frame"},
		{name: "two frames", via: a, frame: append(encodeFrame(t, n.batch("relay-a", "relay-b", 5, n.packet("ab-1", nil))), 1), reason: "unexpected_frame"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := rejected(t, b, tc.reason)
			var err error
			if tc.frame != nil {
				_, err = tc.via.roundTrip(ctxT(t, 10*time.Second), "relay-b", tc.frame)
			} else {
				_, err = tc.via.Send(ctxT(t, 10*time.Second), "relay-b", tc.batch)
			}
			var re *RemoteError
			if !errors.As(err, &re) || !errors.Is(err, ErrBatchRejected) || re.Reason != tc.reason || re.Relay != "relay-b" {
				t.Fatalf("got %v; want a RemoteError rejecting the batch with reason %s", err, tc.reason)
			}
			if got := rejected(t, b, tc.reason); got != before+1 {
				t.Errorf("rejected{%s} went from %v to %v", tc.reason, before, got)
			}
		})
	}
	if calls, _, executed := chain.counts(); calls != 0 || executed != 0 {
		t.Fatalf("rejected batches reached the chain: %d calls, %d executions", calls, executed)
	}
	stillServes(t, n, a, 100)
}

// TestRejectPackets: packets that fail their own checks get REJECTED
// receipts and are never delivered; the batch's other packets are.
func TestRejectPackets(t *testing.T) {
	n, a, b, _ := threeRelays(t)
	chain := n.relays["relay-b"].chain
	n.addPipe("ab-susp", "relay-a", "relay-b", func(p *govchain.Pipe) { p.Status = govchain.PipeStatus_PIPE_SUSPENDED })
	n.addPipe("ac-1", "relay-a", "relay-c")
	n.addPipe("cb-1", "relay-c", "relay-b")
	n.addPipe("ab-small", "relay-a", "relay-b", func(p *govchain.Pipe) { p.Limits.MaxPayload = 100 })

	badSig := n.packet("ab-1", []byte("signed"))
	badSig.Payload = []byte("changed")
	otherKey := &amdp.Packet{PipeId: "ab-1", Sequence: 1000, Operation: amdp.OpWrite, Payload: []byte("x"), TimeoutHeight: 9}
	if err := amdp.SignPacket(otherKey, crypto.DevSigner("mallory-app")); err != nil {
		t.Fatal(err)
	}
	suspended := n.packet("ab-susp", []byte("s"))
	packets := []*amdp.Packet{
		n.packet("ab-1", []byte("good")),
		n.packet("nope", []byte("u")),
		suspended,
		n.packet("ac-1", []byte("d")),
		n.packet("cb-1", []byte("w")),
		n.packet("ab-small", make([]byte, 101)),
		badSig,
		otherKey,
		n.packet("ab-small", make([]byte, 100)),
	}
	want := []string{"", "unknown_pipe", "pipe_not_active", "wrong_destination", "wrong_source", "payload_too_large", "bad_signature", "bad_credential", ""}
	batch := n.batch("relay-a", "relay-b", 1, packets...)
	res, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res.Receipts {
		id := packets[i].ID()
		if want[i] == "" {
			if r.Status != amdp.StatusDelivered || chain.execCount(id) != 1 {
				t.Errorf("packet %d: %v, executed %d times; want delivered once", i, r, chain.execCount(id))
			}
			continue
		}
		if r.Status != amdp.StatusRejected || !strings.HasPrefix(r.Reason, want[i]+": ") {
			t.Errorf("packet %d: status %v reason %q; want REJECTED %s", i, r.Status, r.Reason, want[i])
		}
		if chain.execCount(id) != 0 {
			t.Errorf("rejected packet %d was executed", i)
		}
		if got := rejected(t, b, want[i]); got != 1 {
			t.Errorf("rejected{%s} = %v, want 1", want[i], got)
		}
	}

	// A refusal by the registry is not stored: once the pipe is active
	// again, the same packet is delivered.
	n.reg.addPipe(func() *govchain.Pipe {
		p, _ := n.reg.Pipe("ab-susp")
		q := &govchain.Pipe{Id: p.Id, Source: p.Source, Destination: p.Destination, Status: govchain.PipeStatus_PIPE_ACTIVE, Limits: p.Limits}
		return q
	}())
	res, err = a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 2, suspended))
	if err != nil {
		t.Fatal(err)
	}
	if res.Receipts[0].Status != amdp.StatusDelivered || chain.execCount(suspended.ID()) != 1 {
		t.Fatalf("re-activated pipe: %v", res.Receipts[0])
	}
}

// TestAuth covers the mutual TLS checks on both sides. Each refusal is an
// AuthError, the refusing side counts it, and relay-b keeps serving.
func TestAuth(t *testing.T) {
	t.Run("client certificate from another CA", func(t *testing.T) {
		n, a, b, _ := threeRelays(t)
		rogueCA, err := crypto.NewDevCA("rogue CA")
		if err != nil {
			t.Fatal(err)
		}
		rogue, err := rogueCA.Issue("relay-a", nil)
		if err != nil {
			t.Fatal(err)
		}
		n.reg.updateService("relay-a", func(s *govchain.Service) { s.TlsCertSha256 = nil })
		n.addRelay("relay-d") // a slot for the rogue endpoint
		r := n.start("relay-d", sendOnly, func(c *Config) { c.RelayID, c.Certificate = "relay-a", rogue })
		_, err = r.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil)))
		expectAuth(t, err, ErrAuthRefused)
		if got := rejected(t, b, "untrusted_cert"); got != 1 {
			t.Errorf("rejected{untrusted_cert} = %v, want 1", got)
		}
		stillServes(t, n, a, 2)
	})
	t.Run("client fingerprint not the registered one", func(t *testing.T) {
		n, _, b, _ := threeRelays(t)
		other := sha256.Sum256([]byte("another certificate"))
		n.reg.updateService("relay-a", func(s *govchain.Service) { s.TlsCertSha256 = other[:] })
		a := n.relays["relay-a"].ep
		_, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil)))
		expectAuth(t, err, ErrAuthRefused)
		if got := rejected(t, b, "fingerprint_mismatch"); got != 1 {
			t.Errorf("rejected{fingerprint_mismatch} = %v, want 1", got)
		}
		// The registry is corrected: relay-a gets through.
		fp := crypto.Fingerprint(n.relays["relay-a"].cert)
		n.reg.updateService("relay-a", func(s *govchain.Service) { s.TlsCertSha256 = fp[:] })
		stillServes(t, n, a, 2)
	})
	t.Run("server fingerprint not the registered one", func(t *testing.T) {
		n, a, b, _ := threeRelays(t)
		other := sha256.Sum256([]byte("another certificate"))
		n.reg.updateService("relay-b", func(s *govchain.Service) { s.TlsCertSha256 = other[:] })
		_, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil)))
		expectAuth(t, err, ErrFingerprintMismatch)
		if got := rejected(t, a, "fingerprint_mismatch"); got != 1 {
			t.Errorf("sender's rejected{fingerprint_mismatch} = %v, want 1", got)
		}
		if calls, _, _ := n.relays["relay-b"].chain.counts(); calls != 0 || value(t, b.m.batchesReceived) != 0 {
			t.Fatal("relay-b received a batch over a refused connection")
		}
	})
	t.Run("server is another relay", func(t *testing.T) {
		n, a, _, _ := threeRelays(t)
		n.stop("relay-c")
		cAsServer := n.start("relay-c") // relay-c, receiving this time
		n.reg.updateService("relay-b", func(s *govchain.Service) { s.Address = cAsServer.Addr().String() })
		_, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil)))
		expectAuth(t, err, ErrRelayMismatch)
	})
	t.Run("unregistered client", func(t *testing.T) {
		n, a, b, _ := threeRelays(t)
		n.addRelay("relay-d")
		d := n.start("relay-d", sendOnly)
		n.reg.mu.Lock()
		delete(n.reg.services, "relay-d")
		n.reg.mu.Unlock()
		_, err := d.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-d", "relay-b", 1, n.packet("ab-1", nil)))
		expectAuth(t, err, ErrAuthRefused)
		if got := rejected(t, b, "unknown_relay"); got != 1 {
			t.Errorf("rejected{unknown_relay} = %v, want 1", got)
		}
		stillServes(t, n, a, 2)
	})
}

func expectAuth(t *testing.T, err error, reason error) {
	t.Helper()
	var ae *AuthError
	if !errors.Is(err, ErrAuth) || !errors.Is(err, reason) || !errors.As(err, &ae) {
		t.Fatalf("got %v; want an AuthError for %v", err, reason)
	}
}

// TestLargeBatchChecksInParallel: a batch large enough for the parallel
// signature check, with bad packets spread through it.
func TestLargeBatchChecksInParallel(t *testing.T) {
	n, a, b, _ := threeRelays(t)
	packets := n.packets("ab-1", 300, 64)
	bad := map[int]bool{0: true, 149: true, 150: true, 299: true}
	for i := range bad {
		packets[i].Payload = append(packets[i].Payload, '!') // breaks its signature
	}
	res, err := a.Send(ctxT(t, 20*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, packets...))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res.Receipts {
		if want := map[bool]amdp.ReceiptStatus{true: amdp.StatusRejected, false: amdp.StatusDelivered}[bad[i]]; r.Status != want {
			t.Fatalf("packet %d: %v, want %v", i, r.Status, want)
		}
	}
	if got := rejected(t, b, "bad_signature"); got != float64(len(bad)) {
		t.Fatalf("rejected{bad_signature} = %v, want %d", got, len(bad))
	}
	if got := value(t, b.m.packetsDelivered); got != 296 {
		t.Fatalf("delivered %v, want 296", got)
	}
}

// TestRelayKeys: a relay's batches and receipts are checked against its
// service's account only while that account is ACTIVE.
func TestRelayKeys(t *testing.T) {
	n, a, b, _ := threeRelays(t)
	addr := crypto.SignerAddress(n.relays["relay-a"].signer)
	n.reg.mu.Lock()
	acct := n.reg.accounts[addr]
	n.reg.accounts[addr] = &govchain.Account{Address: acct.Address, Org: acct.Org, Role: acct.Role, Suite: acct.Suite,
		PublicKey: acct.PublicKey, Status: govchain.AccountStatus_ACCOUNT_REVOKED}
	n.reg.mu.Unlock()
	_, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil)))
	var re *RemoteError
	if !errors.As(err, &re) || re.Reason != "no_relay_key" {
		t.Fatalf("revoked sender: %v, want a rejection with reason no_relay_key", err)
	}
	if got := rejected(t, b, "no_relay_key"); got != 1 {
		t.Errorf("rejected{no_relay_key} = %v", got)
	}

	// The sender cannot check receipts without the receiver's key.
	n.reg.updateService("relay-b", func(s *govchain.Service) { s.Account = []byte("not an address") })
	if _, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 2, n.packet("ab-1", nil))); !errors.Is(err, ErrNoRelayKey) {
		t.Fatalf("receiver without a key: %v, want ErrNoRelayKey", err)
	}
}

// TestCheckReceipts: the sender refuses receipt batches that do not
// answer its batch.
func TestCheckReceipts(t *testing.T) {
	n := newTestNet(t, "relay-a", "relay-b")
	a := n.start("relay-a", sendOnly)
	suite, pub, err := a.relayKey("relay-b")
	if err != nil {
		t.Fatal(err)
	}
	batch := n.batch("relay-a", "relay-b", 7, n.packets("ab-1", 3, 10)...)
	answer := func(edit func(*amdp.ReceiptBatch), signer crypto.Signer) amdp.Frame {
		rb := &amdp.ReceiptBatch{Header: &amdp.ReceiptBatchHeader{FromRelay: "relay-b", ToRelay: "relay-a", BatchSeq: 7}}
		for _, p := range batch.Packets {
			id := p.ID()
			rb.Receipts = append(rb.Receipts, &amdp.Receipt{PacketId: id[:], Status: amdp.StatusRejected, Reason: "test"})
		}
		edit(rb)
		if err := amdp.SealReceiptBatch(rb, signer); err != nil {
			t.Fatal(err)
		}
		return amdp.Frame{Kind: amdp.FrameReceiptBatch, ReceiptBatch: rb}
	}
	b := n.relays["relay-b"].signer
	if _, err := a.checkReceipts(answer(func(*amdp.ReceiptBatch) {}, b), batch, "relay-b", suite, pub); err != nil {
		t.Fatalf("good receipts: %v", err)
	}
	other := amdp.PacketID("ab-1", 999)
	for name, f := range map[string]amdp.Frame{
		"batch frame":     {Kind: amdp.FrameBatch, Batch: batch},
		"other signer":    answer(func(*amdp.ReceiptBatch) {}, crypto.DevSigner("mallory")),
		"other batch_seq": answer(func(rb *amdp.ReceiptBatch) { rb.Header.BatchSeq = 8 }, b),
		"other relays":    answer(func(rb *amdp.ReceiptBatch) { rb.Header.ToRelay = "relay-c" }, b),
		"missing receipt": answer(func(rb *amdp.ReceiptBatch) { rb.Receipts = rb.Receipts[:2] }, b),
		"foreign receipt": answer(func(rb *amdp.ReceiptBatch) { rb.Receipts[1].PacketId = other[:] }, b),
	} {
		if _, err := a.checkReceipts(f, batch, "relay-b", suite, pub); !errors.Is(err, ErrBadReceipts) {
			t.Errorf("%s: %v, want ErrBadReceipts", name, err)
		}
	}
}
