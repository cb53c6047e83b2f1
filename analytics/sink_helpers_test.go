package analytics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// The sink tests share one in-process governance node with one pipe,
// pipe-1-2 from org-1 to org-2, started by the first test that asks and
// stopped by TestMain.
var govFixture struct {
	once sync.Once
	node *govchain.LocalNode
	gov  *govchain.Client
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if govFixture.node != nil {
		govFixture.node.Stop()
	}
	os.Exit(code)
}

const testPipe = "pipe-1-2"

// governance returns a client of the shared node, on which testPipe is
// registered and active.
func governance(t *testing.T) *govchain.Client {
	t.Helper()
	f := &govFixture
	f.once.Do(func() {
		dir, err := os.MkdirTemp("", "ccgp-sink-gov-")
		if err != nil {
			f.err = err
			return
		}
		tn, err := govchain.GenerateTestnet(govchain.TestnetOptions{Dir: dir, ChainID: "ccgp-sink-test", Validators: 1,
			GenesisOrgs: 2, BlockInterval: 50 * time.Millisecond})
		if err != nil {
			f.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if f.node, f.err = govchain.StartNode(ctx, tn.Nodes[0].Home, nil); f.err != nil {
			return
		}
		root, err := f.node.TrustRoot()
		if err != nil {
			f.err = err
			return
		}
		// The client the CLI uses: over the node's RPC, anchored.
		if f.gov, f.err = govchain.NewClient(ctx, f.node.RPC(), govchain.WithTrustRoot(root)); f.err != nil {
			return
		}
		if f.err = f.gov.WaitReady(ctx); f.err != nil {
			return
		}
		var parts []govchain.Participant
		var governors []crypto.Signer
		for _, org := range tn.Orgs {
			fp := [32]byte{1}
			parts = append(parts, govchain.Participant{Org: org, Admin: crypto.DevSigner("gov-" + org), Relay: "relay-" + org,
				Address: "127.0.0.1:7001", TLSCert: fp[:], RelayKey: crypto.DevSigner("relay-" + org),
				Subchain: "chain-" + org, Kind: "simchain", App: "app-" + org, AppKey: crypto.DevSigner("app-" + org), Contract: "ct-" + org})
			governors = append(governors, crypto.DevSigner("gov-"+org))
		}
		spec := govchain.ConsortiumSpec{Governors: governors, Participants: parts,
			Pipes: []govchain.PipeSpec{{ID: testPipe, From: tn.Orgs[0], To: tn.Orgs[1], Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC}}}
		_, f.err = govchain.SetupConsortium(ctx, f.gov, spec, nil)
	})
	if f.err != nil {
		t.Fatalf("governance node: %v", f.err)
	}
	return f.gov
}

// kafka starts a kfake broker with the sink's topics (two partitions
// each, and a relay's own events topic) and returns its address and a
// producer.
func kafka(t *testing.T) (brokers []string, prod *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.SeedTopics(2, "ccgp.events", "ccgp.events.relay-org-1", ReceiptsTopic, offence.Topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	prod, err = kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.AllowAutoTopicCreation(), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return c.ListenAddrs(), prod
}

// produce writes rs, each twice when dup: the second copy is the same
// record (same key, value and timestamp), as a producer retry that landed
// twice would make.
func produce(t *testing.T, prod *kgo.Client, dup bool, rs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var all []*kgo.Record
	for _, r := range rs {
		if r.Timestamp.IsZero() {
			r.Timestamp = time.Now()
		}
		all = append(all, r)
		if dup {
			c := *r
			all = append(all, &c)
		}
	}
	for len(all) > 0 {
		n := min(len(all), 10_000)
		if err := prod.ProduceSync(ctx, all[:n]...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		all = all[n:]
	}
}

var appKey = crypto.DevSigner("app-org-1")

// packetRecord is a signed packet of pipe, as a listener writes it.
func packetRecord(t testing.TB, topic, pipe string, seq uint64) *kgo.Record {
	t.Helper()
	p := &amdp.Packet{PipeId: pipe, Sequence: seq, Operation: amdp.OpWrite, Payload: fmt.Appendf(nil, `{"seq":%d}`, seq),
		TimeoutHeight: 1000 + seq}
	if err := amdp.SignPacket(p, appKey); err != nil {
		t.Fatal(err)
	}
	b, err := amdp.EncodePacket(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: topic, Key: []byte(pipe), Value: b}
}

// receiptRecord is a sealed receipt batch from relay-org-2 back to
// relay-org-1 for packets seqs of pipe; receipts of odd seqs failed.
func receiptRecord(t testing.TB, pipe string, batchSeq uint64, seqs []uint64) *kgo.Record {
	t.Helper()
	rb := &amdp.ReceiptBatch{Header: &amdp.ReceiptBatchHeader{FromRelay: "relay-org-2", ToRelay: "relay-org-1", BatchSeq: batchSeq}}
	for _, s := range seqs {
		id := amdp.PacketID(pipe, s)
		r := &amdp.Receipt{PacketId: id[:], Status: amdp.StatusDelivered, DestTxHash: fmt.Appendf(nil, "tx-%030d", s), DestHeight: 500 + s, ResultHash: id[:]}
		if s%2 == 1 {
			r.Status, r.DestTxHash, r.ResultHash, r.Reason = amdp.StatusFailed, nil, nil, "contract reverted"
		}
		rb.Receipts = append(rb.Receipts, r)
	}
	if err := amdp.SealReceiptBatch(rb, crypto.DevSigner("relay-org-2")); err != nil {
		t.Fatal(err)
	}
	b, err := amdp.EncodeReceiptBatch(nil, rb)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: ReceiptsTopic, Key: []byte("relay-org-2"), Value: b}
}

// resequence is r's packet with another sequence and the same
// (now wrong) signature.
func resequence(t testing.TB, r *kgo.Record, seq uint64) *kgo.Record {
	t.Helper()
	p, err := amdp.DecodePacket(r.Value, amdp.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	p.Sequence = seq
	b, err := amdp.EncodePacket(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: r.Topic, Key: r.Key, Value: b}
}

func offenceRecord(i int) *kgo.Record {
	r := offence.Record{TimeUnixMs: 1_764_720_000_000 + int64(i), Reporter: "relay-org-2", Stage: offence.StageReceiver,
		Reason: "bad_signature", Org: "org-1", Relay: "relay-org-1", Pipe: testPipe, Seq: uint64(i), Proven: i%2 == 0,
		Evidence: []byte{0, 1, 2, byte(i)}}
	b, err := offence.Encode(r)
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Topic: offence.Topic, Key: []byte(r.Org), Value: b}
}

// running is a sink running in the background.
type running struct {
	s    *Sink
	stop context.CancelFunc
	done chan error
}

func startSink(t *testing.T, cfg SinkConfig, hook func(string) error) *running {
	t.Helper()
	s, err := NewSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.hook = hook
	ctx, stop := context.WithCancel(context.Background())
	r := &running{s: s, stop: stop, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { stop(); r.wait(t) })
	return r
}

// wait returns Run's result, failing the test when it takes over 30 s.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // a second wait (the cleanup) sees it too
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("sink did not stop within 30 s")
		return nil
	}
}

// eventually polls cond every 50 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func count(t *testing.T, conn driver.Conn, q string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// proxy is a TCP proxy the test can cut (every connection closed, new
// ones refused) and restore on the same address.
type proxy struct {
	t        *testing.T
	addr, to string
	mu       sync.Mutex // guards ln and conns
	ln       net.Listener
	conns    map[net.Conn]bool
	wg       sync.WaitGroup
}

func newProxy(t *testing.T, to string) *proxy {
	p := &proxy{t: t, to: to, addr: "127.0.0.1:0", conns: map[net.Conn]bool{}}
	p.restore()
	t.Cleanup(func() { p.cut(); p.wg.Wait() })
	return p
}

func (p *proxy) restore() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.ln != ln { // cut meanwhile
				p.mu.Unlock()
				c.Close()
				up.Close()
				return
			}
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(c, up)
			go pipe(up, c)
		}
	}()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

var errCrash = errors.New("test: sink killed here")
