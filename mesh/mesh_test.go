package mesh

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

func sendOnly(c *Config) { c.Deliverer, c.DedupeDir = nil, "" }

// twoRelays is the usual set-up: relay-a sends, relay-b receives, pipes
// ab-1 and ab-2 lead from a to b.
func twoRelays(t *testing.T, bOpts ...epOpt) (*testNet, *Endpoint, *Endpoint) {
	n := newTestNet(t, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	n.addPipe("ab-2", "relay-a", "relay-b")
	b := n.start("relay-b", bOpts...)
	a := n.start("relay-a", sendOnly)
	return n, a, b
}

func TestRoundTrip(t *testing.T) {
	reg := prometheus.NewRegistry()
	n, a, b := twoRelays(t, func(c *Config) { c.Metrics = reg })
	chain := n.relays["relay-b"].chain
	batch := n.batch("relay-a", "relay-b", 1, append(n.packets("ab-1", 5, 200), n.packets("ab-2", 3, 300)...)...)

	rb, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
	if err != nil {
		t.Fatal(err)
	}
	if h := rb.Header; h.FromRelay != "relay-b" || h.ToRelay != "relay-a" || h.BatchSeq != 1 {
		t.Fatalf("receipt header %v", h)
	}
	for i, r := range rb.Receipts {
		id := batch.Packets[i].ID()
		if !bytes.Equal(r.PacketId, id[:]) {
			t.Fatalf("receipt %d is for %x, want %x (order)", i, r.PacketId, id)
		}
		d, ok, _ := chain.FindDelivery(t.Context(), id)
		if !ok || r.Status != amdp.StatusDelivered || !bytes.Equal(r.DestTxHash, d.TxHash) || r.DestHeight != d.Height || !bytes.Equal(r.ResultHash, d.ResultHash[:]) {
			t.Fatalf("receipt %d %v does not match the chain's %+v", i, r, d)
		}
		if got := chain.execCount(id); got != 1 {
			t.Fatalf("packet %d executed %d times", i, got)
		}
	}
	if got := value(t, b.m.packetsDelivered); got != 8 {
		t.Errorf("packets delivered %v, want 8", got)
	}
	if got := value(t, a.m.batchesSent); got != 1 {
		t.Errorf("batches sent %v, want 1", got)
	}
	if got := value(t, a.m.sendSeconds); got != 1 {
		t.Errorf("send latency samples %v, want 1", got)
	}
	// The registered metrics are gathered under their names.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"ccgp_mesh_batches_received_total", "ccgp_mesh_packets_delivered_total"} {
		if !names[want] {
			t.Errorf("metric %s not registered (have %v)", want, names)
		}
	}
}

// TestResendIsIdempotent sends one batch twice, as after a lost ack:
// nothing is delivered twice and the receipts are the same.
func TestResendIsIdempotent(t *testing.T) {
	n, a, b := twoRelays(t)
	chain := n.relays["relay-b"].chain
	batch := n.batch("relay-a", "relay-b", 1, n.packets("ab-1", 16, 128)...)
	first, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
	if err != nil {
		t.Fatal(err)
	}
	sameReceipts(t, first, second)
	calls, _, executed := chain.counts()
	if calls != 1 || executed != 16 {
		t.Fatalf("deliver calls %d, executions %d; want 1 and 16", calls, executed)
	}
	if got := value(t, b.m.duplicates); got != 16 {
		t.Errorf("duplicates suppressed %v, want 16", got)
	}
}

// TestConcurrentCopies sends two copies of a batch at once to a slow
// chain: the second waits for the first and reuses its receipts.
func TestConcurrentCopies(t *testing.T) {
	n, a, _ := twoRelays(t)
	chain := n.relays["relay-b"].chain
	chain.set(func(c *memChain) { c.delay = 100 * time.Millisecond })
	batch := n.batch("relay-a", "relay-b", 1, n.packets("ab-1", 8, 64)...)
	var wg sync.WaitGroup
	res := make([]*amdp.ReceiptBatch, 2)
	errs := make([]error, 2)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	sameReceipts(t, res[0], res[1])
	if _, _, executed := chain.counts(); executed != 8 {
		t.Fatalf("%d executions, want 8", executed)
	}
}

// TestRestartReceiver closes the receiving endpoint and opens it again on
// the same store between two sends of one batch.
func TestRestartReceiver(t *testing.T) {
	n, a, _ := twoRelays(t)
	chain := n.relays["relay-b"].chain
	batch := n.batch("relay-a", "relay-b", 1, n.packets("ab-1", 10, 100)...)
	first, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
	if err != nil {
		t.Fatal(err)
	}
	n.stop("relay-b")
	b2 := n.start("relay-b")
	second, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
	if err != nil {
		t.Fatal(err)
	}
	sameReceipts(t, first, second)
	if calls, finds, executed := chain.counts(); calls != 1 || finds != 0 || executed != 10 {
		t.Fatalf("deliver calls %d, finds %d, executions %d; want 1, 0, 10", calls, finds, executed)
	}
	if got := value(t, b2.m.duplicates); got != 10 {
		t.Errorf("restarted relay suppressed %v duplicates, want 10", got)
	}
}

// TestCrashWindow: a crash left in-flight markers; the chain has some of
// those packets. They are found with FindDelivery, not executed again; a
// marked packet the chain does not have is delivered once.
func TestCrashWindow(t *testing.T) {
	n := newTestNet(t, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	rb := n.relays["relay-b"]
	packets := n.packets("ab-1", 6, 100)
	// Before the crash: packets 0-3 were marked, 0-2 landed on the chain.
	store, err := OpenDedupeStore(rb.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.MarkInFlight(amdp.PacketIDs(packets[:4])); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	landed := make(map[[32]byte][]byte)
	for _, p := range packets[:3] {
		landed[p.ID()] = rb.chain.execute(p).TxHash
	}

	b := n.start("relay-b")
	a := n.start("relay-a", sendOnly)
	res, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, packets...))
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range packets {
		if got := rb.chain.execCount(p.ID()); got != 1 {
			t.Errorf("packet %d executed %d times", i, got)
		}
		if tx, ok := landed[p.ID()]; ok && !bytes.Equal(res.Receipts[i].DestTxHash, tx) {
			t.Errorf("packet %d: receipt tx %x, the chain's is %x", i, res.Receipts[i].DestTxHash, tx)
		}
	}
	calls, finds, _ := rb.chain.counts()
	if finds != 4 || calls != 1 {
		t.Fatalf("FindDelivery calls %d (want 4, one per marked packet), Deliver calls %d (want 1)", finds, calls)
	}
	if got := value(t, b.m.packetsDelivered); got != 3 {
		t.Errorf("delivered %v, want 3 (one marked but not landed, two new)", got)
	}
	// The markers are settled: a resend asks the chain nothing.
	if _, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, packets...)); err != nil {
		t.Fatal(err)
	}
	if _, finds2, _ := rb.chain.counts(); finds2 != finds {
		t.Errorf("resend asked FindDelivery %d more times", finds2-finds)
	}
}

// TestDeliverErrorIsTransient: the chain executes a batch but its answer
// is lost. The sender is told to retry, and the retry delivers nothing
// twice.
func TestDeliverErrorIsTransient(t *testing.T) {
	n, a, b := twoRelays(t)
	chain := n.relays["relay-b"].chain
	chain.set(func(c *memChain) { c.failNext = 1 })
	batch := n.batch("relay-a", "relay-b", 1, n.packets("ab-1", 5, 100)...)
	_, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
	var re *RemoteError
	if !errors.Is(err, ErrPeerFailed) || !errors.As(err, &re) || re.Reason != "deliver_failed" || !re.Retry {
		t.Fatalf("Send: %v; want a RemoteError matching ErrPeerFailed, reason deliver_failed", err)
	}
	if got := value(t, b.m.failures.WithLabelValues("deliver_failed")); got != 1 {
		t.Errorf("receive failures %v, want 1", got)
	}
	if _, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch); err != nil {
		t.Fatal(err)
	}
	if _, _, executed := chain.counts(); executed != 5 {
		t.Fatalf("%d executions, want 5", executed)
	}
}

// TestContractRejectionIsFinal: a packet the destination contract refuses
// gets a REJECTED receipt with the chain's reason, stored like any other.
func TestContractRejectionIsFinal(t *testing.T) {
	n, a, _ := twoRelays(t)
	chain := n.relays["relay-b"].chain
	chain.set(func(c *memChain) { c.reject["ab-2"] = true })
	batch := n.batch("relay-a", "relay-b", 1, n.packet("ab-1", []byte("x")), n.packet("ab-2", []byte("y")))
	res, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
	if err != nil {
		t.Fatal(err)
	}
	if res.Receipts[0].Status != amdp.StatusDelivered || res.Receipts[1].Status != amdp.StatusRejected || res.Receipts[1].Reason != "contract refused" {
		t.Fatalf("receipts %v", res.Receipts)
	}
	again, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch)
	if err != nil {
		t.Fatal(err)
	}
	sameReceipts(t, res, again)
	if _, _, executed := chain.counts(); executed != 2 {
		t.Fatalf("%d executions, want 2", executed)
	}
}

func TestSendChecksItsBatch(t *testing.T) {
	n, a, _ := twoRelays(t)
	cases := map[string]*amdp.Batch{
		"nil":          nil,
		"not from us":  n.batch("relay-b", "relay-b", 1, n.packet("ab-1", nil)),
		"other target": n.batch("relay-a", "relay-a", 1, n.packet("ab-1", nil)),
	}
	for name, b := range cases {
		if _, err := a.Send(ctxT(t, 5*time.Second), "relay-b", b); !errors.Is(err, ErrBadBatch) {
			t.Errorf("%s: %v, want ErrBadBatch", name, err)
		}
	}
	b := n.batch("relay-a", "relay-x", 1, n.packet("ab-1", nil))
	if _, err := a.Send(ctxT(t, 5*time.Second), "relay-x", b); !errors.Is(err, ErrUnknownRelay) {
		t.Errorf("unknown relay: %v, want ErrUnknownRelay", err)
	}
}

func TestCloseStopsSend(t *testing.T) {
	n, a, _ := twoRelays(t)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := a.Send(ctxT(t, 5*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil)))
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
	if err := a.Run(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
}

func sameReceipts(t *testing.T, a, b *amdp.ReceiptBatch) {
	t.Helper()
	if len(a.Receipts) != len(b.Receipts) {
		t.Fatalf("%d receipts, then %d", len(a.Receipts), len(b.Receipts))
	}
	for i := range a.Receipts {
		if !proto.Equal(a.Receipts[i], b.Receipts[i]) {
			t.Fatalf("receipt %d differs:\n%v\n%v", i, a.Receipts[i], b.Receipts[i])
		}
	}
	if !bytes.Equal(a.Header.MerkleRoot, b.Header.MerkleRoot) {
		t.Fatalf("receipt roots differ")
	}
}

// TestCloseDuringDial: Close does not wait for a dial to a peer that does
// not answer, and the Send dialling returns ErrClosed.
func TestCloseDuringDial(t *testing.T) {
	n := newTestNet(t, "relay-a", "relay-b")
	a := n.start("relay-a", sendOnly, func(c *Config) { c.DialTimeout = 30 * time.Second })
	// relay-b's service points at a port where nothing answers.
	done := make(chan error, 1)
	go func() {
		_, err := a.Send(ctxT(t, 30*time.Second), "relay-b", n.batch("relay-a", "relay-b", 1, n.packet("ab-1", nil)))
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Send: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Send did not return after Close")
	}
}

func TestConfigValidation(t *testing.T) {
	n := newTestNet(t, "relay-a", "relay-b")
	good := Config{RelayID: "relay-a", ListenAddr: "127.0.0.1:0", Certificate: n.relays["relay-a"].cert,
		CAs: n.ca.Pool(), Registry: n.reg}
	for name, edit := range map[string]func(*Config){
		"no relay id":        func(c *Config) { c.RelayID = "" },
		"no certificate":     func(c *Config) { c.Certificate.Certificate = nil },
		"no CAs":             func(c *Config) { c.CAs = nil },
		"no registry":        func(c *Config) { c.Registry = nil },
		"other relay's cert": func(c *Config) { c.Certificate = n.relays["relay-b"].cert },
		"deliverer, no dir":  func(c *Config) { c.Deliverer, c.Signer = newMemChain(), n.relays["relay-a"].signer },
		"deliverer, no key":  func(c *Config) { c.Deliverer, c.DedupeDir = newMemChain(), t.TempDir() },
		"negative backoff":   func(c *Config) { c.MaxBackoff = -1 },
		"bad listen address": func(c *Config) { c.ListenAddr = "nowhere:x" },
	} {
		cfg := good
		edit(&cfg)
		if ep, err := New(cfg); err == nil {
			ep.Close()
			t.Errorf("%s: New accepted it", name)
		}
	}
	ep, err := New(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	// Metrics registered twice under one relay id are refused, and a
	// closed endpoint gives its names back.
	reg := prometheus.NewRegistry()
	good.Metrics = reg
	ep1, err := New(good)
	if err != nil {
		t.Fatal(err)
	}
	if ep2, err := New(good); err == nil {
		ep2.Close()
		t.Fatal("two endpoints registered the same metrics")
	}
	ep1.Close()
	ep3, err := New(good)
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	ep3.Close()
}

// TestOwedReceiptsReplayed: a receipt batch the OnReceipts hook has not
// acknowledged (Anchored) is told to it again when the endpoint runs
// again on its store, with the root its sender got; an acknowledged one
// is not. A resend answered from the delivery record is told again too.
func TestOwedReceiptsReplayed(t *testing.T) {
	type told struct {
		seq  uint64
		root []byte
		refs int
	}
	hook := func(ch chan told) epOpt {
		return func(c *Config) {
			c.OnReceipts = func(b *amdp.Batch, rb *amdp.ReceiptBatch) {
				for _, p := range b.Packets {
					if p.PipeId == "" || p.Sequence == 0 {
						t.Errorf("batch %d told without its packets' pipes and sequences", b.Header.BatchSeq)
					}
				}
				ch <- told{b.Header.BatchSeq, rb.Header.MerkleRoot, len(b.Packets)}
			}
		}
	}
	next := func(ch chan told) told {
		t.Helper()
		select {
		case got := <-ch:
			return got
		case <-time.After(10 * time.Second):
			t.Fatal("the hook was not told of a receipt batch")
		}
		return told{}
	}
	none := func(ch chan told) {
		t.Helper()
		select {
		case got := <-ch:
			t.Fatalf("batch %d told again after it was acknowledged", got.seq)
		case <-time.After(300 * time.Millisecond):
		}
	}
	n := newTestNet(t, "relay-a", "relay-b")
	n.addPipe("ab-1", "relay-a", "relay-b")
	a := n.start("relay-a", sendOnly)
	ch := make(chan told, 8)
	b := n.start("relay-b", hook(ch))
	batch1 := n.batch("relay-a", "relay-b", 1, n.packets("ab-1", 4, 100)...)
	first, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(ctxT(t, 10*time.Second), "relay-b", n.batch("relay-a", "relay-b", 2, n.packets("ab-1", 3, 100)...)); err != nil {
		t.Fatal(err)
	}
	next(ch)
	if got := next(ch); got.seq != 2 {
		t.Fatalf("told batch %d, want 2", got.seq)
	}
	if err := b.Anchored("relay-a", 2); err != nil {
		t.Fatal(err)
	}
	n.stop("relay-b")

	// Batch 1 was never acknowledged: told again at start.
	b = n.start("relay-b", hook(ch))
	if got := next(ch); got.seq != 1 || !bytes.Equal(got.root, first.Header.MerkleRoot) || got.refs != 4 {
		t.Fatalf("replayed batch %d with %d packets, root %x; want batch 1, 4 packets, root %x", got.seq, got.refs, got.root, first.Header.MerkleRoot)
	}
	none(ch)
	if err := b.Anchored("relay-a", 1); err != nil {
		t.Fatal(err)
	}
	n.stop("relay-b")

	n.start("relay-b", hook(ch))
	none(ch)
	// A resend is answered from the record, and told again.
	again, err := a.Send(ctxT(t, 10*time.Second), "relay-b", batch1)
	if err != nil {
		t.Fatal(err)
	}
	sameReceipts(t, first, again)
	if got := next(ch); got.seq != 1 {
		t.Fatalf("resend told as batch %d", got.seq)
	}
	if _, _, executed := n.relays["relay-b"].chain.counts(); executed != 7 {
		t.Fatalf("%d executions, want 7", executed)
	}
}
