package analytics_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/analytics"
	"github.com/ccgpmesh/ccgp/analytics/chtest"
	"github.com/ccgpmesh/ccgp/backoff"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
)

// govNet is an in-process governance node with two genesis orgs (org-1,
// org-2) and, after consortium, a relay and pipe p1 from org-1 to org-2.
type govNet struct {
	t      *testing.T
	c      *govchain.Client
	relayA crypto.Signer // relay-org-1's account
	relayB crypto.Signer
}

func startGov(t *testing.T) *govNet {
	t.Helper()
	tn, err := govchain.GenerateTestnet(govchain.TestnetOptions{Dir: t.TempDir(), ChainID: "ccgp-analytics-test", Validators: 1,
		GenesisOrgs: 2, BlockInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := govchain.StartNode(context.Background(), tn.Nodes[0].Home, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Stop() })
	c, err := ln.Client(govchain.WithCommitTimeout(20 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return &govNet{t: t, c: c, relayA: crypto.DevSigner("relay-org-1"), relayB: crypto.DevSigner("relay-org-2")}
}

func (g *govNet) consortium(ctx context.Context) {
	g.t.Helper()
	fp := bytes.Repeat([]byte{7}, 32)
	part := func(org string, relay crypto.Signer) govchain.Participant {
		return govchain.Participant{Org: org, Admin: crypto.DevSigner("gov-" + org), Relay: "relay-" + org, Address: "127.0.0.1:7001",
			TLSCert: fp, RelayKey: relay, Subchain: "chain-" + org, Kind: "simchain", App: "app-" + org,
			AppKey: crypto.DevSigner("app-" + org), Contract: "ct-" + org}
	}
	spec := govchain.ConsortiumSpec{
		Governors:    []crypto.Signer{crypto.DevSigner("gov-org-1"), crypto.DevSigner("gov-org-2")},
		Participants: []govchain.Participant{part("org-1", g.relayA), part("org-2", g.relayB)},
		Pipes:        []govchain.PipeSpec{{ID: "p1", From: "org-1", To: "org-2"}},
	}
	if _, err := govchain.SetupConsortium(ctx, g.c, spec, nil); err != nil {
		g.t.Fatal(err)
	}
}

// ok submits m and returns its result.
func (g *govNet) ok(ctx context.Context, s crypto.Signer, m proto.Message) *govchain.TxResult {
	g.t.Helper()
	r, err := g.c.Submit(ctx, s, m)
	if err != nil {
		g.t.Fatalf("%T: %v", m, err)
	}
	return r
}

// txsPerHeight counts the txs of every block from 1 to top, as the chain
// has them: what the governance table must hold.
func (g *govNet) txsPerHeight(ctx context.Context, top int64) map[uint64]uint64 {
	g.t.Helper()
	out := map[uint64]uint64{}
	for h := int64(1); h <= top; h++ {
		b, err := g.c.RPC().Block(ctx, &h)
		if err != nil {
			g.t.Fatal(err)
		}
		if n := len(b.Block.Txs); n > 0 {
			out[uint64(h)] = uint64(n)
		}
	}
	return out
}

func openBatch(seq, first, last uint64) *govchain.MsgOpenBatches {
	return &govchain.MsgOpenBatches{Batches: []*govchain.BatchOpen{{FromRelay: "relay-org-1", ToRelay: "relay-org-2", BatchSeq: seq,
		MerkleRoot: bytes.Repeat([]byte{byte(seq)}, 32), Count: uint32(last - first + 1),
		Ranges: []*govchain.PipeRange{{Pipe: "p1", First: first, Last: last}}}}}
}

func receipts(seq uint64, st ...byte) *govchain.MsgAnchorReceipts {
	return &govchain.MsgAnchorReceipts{Batches: []*govchain.BatchReceipts{{FromRelay: "relay-org-1", BatchSeq: seq,
		ReceiptRoot: bytes.Repeat([]byte{9}, 32), Statuses: st}}}
}

func confirm(seq uint64) *govchain.MsgConfirmBatches {
	return &govchain.MsgConfirmBatches{Batches: []*govchain.BatchRef{{FromRelay: "relay-org-1", BatchSeq: seq}}}
}

func exception(state govchain.PacketState, seq uint64) *govchain.MsgTxException {
	return &govchain.MsgTxException{State: state, Reason: "test " + state.String(), Packets: []*govchain.PacketRef{{Pipe: "p1", Seq: seq}}}
}

// follower runs a GovFollower until the test ends or stop is called.
type follower struct {
	f    *analytics.GovFollower
	stop func()
}

func runFollower(t *testing.T, cfg analytics.GovFollowerConfig) *follower {
	t.Helper()
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = 100 * time.Millisecond
	}
	cfg.Retry = backoff.Policy{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	cfg.OpTimeout = 5 * time.Second
	f, err := analytics.NewGovFollower(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("Run did not return within 15 s of its context's end")
			}
		})
	}
	t.Cleanup(stop)
	return &follower{f: f, stop: stop}
}

// caughtUp waits until the follower has written every block up to h.
func (fl *follower) caughtUp(t *testing.T, h int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for fl.f.Stats().Written < h {
		if time.Now().After(deadline) {
			t.Fatalf("follower at %+v, want written through %d", fl.f.Stats(), h)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func count(ctx context.Context, t *testing.T, conn driver.Conn, q string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// ledgerTxs reads governance FINAL as height -> txs.
func ledgerTxs(ctx context.Context, t *testing.T, conn driver.Conn, db string) map[uint64]uint64 {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT height, count() FROM "+db+".governance FINAL GROUP BY height")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[uint64]uint64{}
	for rows.Next() {
		var h, n uint64
		if err := rows.Scan(&h, &n); err != nil {
			t.Fatal(err)
		}
		out[h] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTxs(t *testing.T, got, want map[uint64]uint64) {
	t.Helper()
	for h, n := range want {
		if got[h] != n {
			t.Errorf("height %d: %d governance rows, the block has %d txs", h, got[h], n)
		}
	}
	for h, n := range got {
		if want[h] == 0 {
			t.Errorf("height %d: %d governance rows for a block with no tx", h, n)
		}
	}
}

func migrated(t *testing.T) (driver.Conn, string, string) {
	t.Helper()
	conn, addr, db := chtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	return conn, addr, db
}

type anchorRec struct {
	to, root                  string
	openH, receiptH, confH    uint64
	openTx, receiptTx, confTx string
	openT, confT              time.Time
}

// TestGovFollower: a consortium, a pipe, two batches anchored through
// their three stages, exceptions through their states (one settled by a
// confirmation that names it nowhere) and a refused tx; the follower,
// stopped midway and started again, then run a third time over the same
// ledger, leaves one row per tx, anchor and exception record, with the
// chain's heights, txs and states. The same holds when the node keeps no
// past heights (a follower more than 10 000 blocks behind): records are
// read at the latest height and written by the block that last changed
// them.
func TestGovFollower(t *testing.T) {
	for _, tc := range []struct {
		name string
		view func(*govchain.Client) analytics.GovChain
	}{
		{"every height kept", func(c *govchain.Client) analytics.GovChain { return c }},
		{"past heights pruned", func(c *govchain.Client) analytics.GovChain { return pruned{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) { followScenario(t, tc.view) })
	}
}

// pruned is a node that keeps only its latest state: it refuses every
// read at a past height, as a node refuses one older than the heights it
// keeps.
type pruned struct{ *govchain.Client }

var errPruned = errors.New("state not available (the test's node keeps no past heights)")

func (p pruned) GetAt(ctx context.Context, h int64, key []byte, m proto.Message) (int64, error) {
	if h != 0 {
		return 0, errPruned
	}
	return p.Client.GetAt(ctx, 0, key, m)
}

func (p pruned) ExceptionsIn(ctx context.Context, h int64, pipe string, first, last uint64) ([]*govchain.TxException, error) {
	if h != 0 {
		return nil, errPruned
	}
	return p.Client.ExceptionsIn(ctx, 0, pipe, first, last)
}

func followScenario(t *testing.T, view func(*govchain.Client) analytics.GovChain) {
	conn, _, db := migrated(t)
	g := startGov(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := analytics.GovFollowerConfig{Chain: view(g.c), Conn: conn, DB: db, MaxRows: 3, FlushBlocks: 4}

	first := runFollower(t, cfg)
	g.consortium(ctx)
	open1 := g.ok(ctx, g.relayA, openBatch(1, 1, 3))
	rcpt1 := g.ok(ctx, g.relayB, receipts(1, 1, 1, 2))
	conf1 := g.ok(ctx, g.relayA, confirm(1))
	h, err := g.c.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first.caughtUp(t, h)
	first.stop()
	// The block the next run resumes at, and its txs: the most it may write again.
	resumeAt := count(ctx, t, conn, "SELECT max(height) FROM "+db+".governance FINAL")
	again := count(ctx, t, conn, "SELECT count() FROM "+db+".governance FINAL WHERE height = ?", resumeAt)

	// While no follower runs.
	g.ok(ctx, g.relayA, exception(govchain.PacketState_PACKET_FAILED, 3))
	rolled := g.ok(ctx, g.relayA, exception(govchain.PacketState_PACKET_ROLLED_BACK, 3))
	g.ok(ctx, g.relayB, exception(govchain.PacketState_PACKET_FAILED, 5))
	second := runFollower(t, cfg)
	g.ok(ctx, g.relayA, exception(govchain.PacketState_PACKET_RETRYING, 5))
	g.ok(ctx, g.relayA, exception(govchain.PacketState_PACKET_MANUAL, 5))
	resolver := crypto.DevSigner("gov-org-2")
	g.ok(ctx, resolver, &govchain.MsgResolve{Packets: []*govchain.PacketRef{{Pipe: "p1", Seq: 5}}, Action: "retry", Note: "destination back"})
	g.ok(ctx, g.relayA, exception(govchain.PacketState_PACKET_RETRYING, 5))
	g.ok(ctx, g.relayA, exception(govchain.PacketState_PACKET_DELIVERED, 5))
	open2 := g.ok(ctx, g.relayA, openBatch(2, 4, 5))
	g.ok(ctx, g.relayB, receipts(2, 1, 1))
	conf2 := g.ok(ctx, g.relayA, confirm(2)) // moves seq 5 to CONFIRMED
	// A refused tx: batch 1 again. CheckTx lets it in; the block refuses it.
	refusedHash, err := g.c.Broadcast(ctx, g.relayA, openBatch(1, 1, 3))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.c.WaitTx(ctx, refusedHash); !errors.Is(err, govchain.ErrExists) {
		t.Fatalf("second open of batch 1: %v, want ErrExists", err)
	}
	if h, err = g.c.Height(ctx); err != nil {
		t.Fatal(err)
	}
	second.caughtUp(t, h)
	if s := second.f.Stats(); s.Chain < h || s.Lag() != s.Chain-s.Written || s.Blocks == 0 || s.Txs == 0 || s.Peak != cfg.MaxRows {
		t.Fatalf("stats %+v", s)
	}
	second.stop()
	want := g.txsPerHeight(ctx, h)
	var total uint64
	for _, n := range want {
		total += n
	}

	check := func(run string) {
		t.Helper()
		sameTxs(t, ledgerTxs(ctx, t, conn, db), want)
		if n := count(ctx, t, conn, "SELECT count() FROM "+db+".anchors FINAL"); n != 2 {
			t.Errorf("%s: %d anchors, want 2", run, n)
		}
		if n := count(ctx, t, conn, "SELECT count() FROM "+db+".exceptions FINAL"); n != 2 {
			t.Errorf("%s: %d exception records, want 2", run, n)
		}
		var a anchorRec
		if err := conn.QueryRow(ctx, "SELECT to_relay, batch_root, open_height, receipt_height, confirm_height, open_tx, receipt_tx, confirm_tx, open_time, confirm_time "+
			"FROM "+db+".anchors FINAL WHERE from_relay = 'relay-org-1' AND batch_seq = 1").
			Scan(&a.to, &a.root, &a.openH, &a.receiptH, &a.confH, &a.openTx, &a.receiptTx, &a.confTx, &a.openT, &a.confT); err != nil {
			t.Fatal(err)
		}
		wantA := anchorRec{to: "relay-org-2", root: strings.Repeat("01", 32), openH: uint64(open1.Height), receiptH: uint64(rcpt1.Height),
			confH: uint64(conf1.Height), openTx: hex.EncodeToString(open1.Hash), receiptTx: hex.EncodeToString(rcpt1.Hash),
			confTx: hex.EncodeToString(conf1.Hash), openT: a.openT, confT: a.confT}
		if a != wantA || a.openT.Year() < 2020 || a.confT.Before(a.openT) {
			t.Errorf("%s: anchor 1\n got %+v\nwant %+v", run, a, wantA)
		}
		var oh, ch uint64
		if err := conn.QueryRow(ctx, "SELECT open_height, confirm_height FROM "+db+".anchors FINAL WHERE batch_seq = 2").Scan(&oh, &ch); err != nil ||
			oh != uint64(open2.Height) || ch != uint64(conf2.Height) {
			t.Errorf("%s: anchor 2 heights %d %d (%v), want %d %d", run, oh, ch, err, open2.Height, conf2.Height)
		}
		type exRec struct {
			state, reason, tx, by string
			height                uint64
			attempts              uint32
		}
		for _, tc := range []struct {
			seq  uint64
			want exRec
		}{
			{3, exRec{"ROLLED_BACK", "test PACKET_ROLLED_BACK", hex.EncodeToString(rolled.Hash), "", uint64(rolled.Height), 0}},
			{5, exRec{"CONFIRMED", "confirmed in batch relay-org-1/2", hex.EncodeToString(conf2.Hash), crypto.SignerAddress(resolver).String(), uint64(conf2.Height), 2}},
		} {
			var e exRec
			if err := conn.QueryRow(ctx, "SELECT state, reason, tx_hash, resolved_by, height, attempts FROM "+db+".exceptions FINAL WHERE pipe = 'p1' AND seq = ?", tc.seq).
				Scan(&e.state, &e.reason, &e.tx, &e.by, &e.height, &e.attempts); err != nil {
				t.Fatal(err)
			}
			if e != tc.want {
				t.Errorf("%s: exception seq %d\n got %+v\nwant %+v", run, tc.seq, e, tc.want)
			}
		}
		var code uint32
		var typ, signer, org, sum string
		if err := conn.QueryRow(ctx, "SELECT code, msg_type, signer, org, summary FROM "+db+".governance FINAL WHERE tx_hash = ?", hex.EncodeToString(refusedHash)).
			Scan(&code, &typ, &signer, &org, &sum); err != nil {
			t.Fatal(err)
		}
		if code != govchain.CodeExists || typ != "open-batches" || signer != crypto.SignerAddress(g.relayA).String() || org != "org-1" || !strings.Contains(sum, "already anchored") {
			t.Errorf("%s: refused tx row: code %d, %s, %s, %s, %q", run, code, typ, signer, org, sum)
		}
		if n := count(ctx, t, conn, "SELECT count() FROM "+db+".governance FINAL WHERE code = 0 AND msg_type = 'open-batches' AND org = 'org-1' AND summary LIKE 'anchor kind=open%'"); n != 2 {
			t.Errorf("%s: %d accepted open-batches rows, want 2", run, n)
		}
	}
	check("after a restart")
	// The restart read again at most the block it resumed at.
	if raw := count(ctx, t, conn, "SELECT count() FROM "+db+".governance"); raw > total+again {
		t.Errorf("governance holds %d rows for %d txs: the restart at height %d rewrote more than its %d", raw, total, resumeAt, again)
	}

	third := runFollower(t, cfg)
	third.caughtUp(t, h)
	third.stop()
	check("after a third run")
}

// TestGovFollowerClickHouseOutage: ClickHouse unreachable (a proxy that
// cuts every connection) while the chain moves on; once it is back, every
// block's txs are in the ledger and none twice.
func TestGovFollowerClickHouseOutage(t *testing.T) {
	conn, addr, db := migrated(t)
	g := startGov(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startProxy(t, addr)
	pconn, err := analytics.Connect(ctx, p.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pconn.Close() })
	fl := runFollower(t, analytics.GovFollowerConfig{Chain: g.c, Conn: pconn, DB: db, FlushBlocks: 2})
	h, err := g.c.Height(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fl.caughtUp(t, h)

	p.setCut(true)
	cutAt := fl.f.Stats().Written
	g.consortium(ctx) // some 20 txs over as many blocks
	g.ok(ctx, g.relayA, openBatch(1, 1, 2))
	time.Sleep(500 * time.Millisecond)
	if s := fl.f.Stats(); s.Written > cutAt+int64(2) || s.Retries == 0 {
		// At most the blocks it held when the cut came get written.
		t.Fatalf("during the outage: %+v (cut at %d)", s, cutAt)
	}
	p.setCut(false)
	if h, err = g.c.Height(ctx); err != nil {
		t.Fatal(err)
	}
	fl.caughtUp(t, h)
	fl.stop()
	sameTxs(t, ledgerTxs(ctx, t, conn, db), g.txsPerHeight(ctx, h))
	if n := count(ctx, t, conn, "SELECT count() FROM "+db+".anchors FINAL WHERE batch_seq = 1"); n != 1 {
		t.Errorf("%d rows for anchor 1, want 1", n)
	}
	t.Logf("after the outage: %+v", fl.f.Stats())
}

func TestGovFollowerConfig(t *testing.T) {
	conn, _, _ := chtest.Database(t)
	g := &govchain.Client{}
	for _, tc := range []struct {
		name string
		cfg  analytics.GovFollowerConfig
		want string
	}{
		{"no chain", analytics.GovFollowerConfig{Conn: conn, DB: "ccgp"}, "no chain client"},
		{"no connection", analytics.GovFollowerConfig{Chain: g, DB: "ccgp"}, "no ClickHouse connection"},
		{"bad database", analytics.GovFollowerConfig{Chain: g, Conn: conn, DB: "x; DROP"}, "bad database name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := analytics.NewGovFollower(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

// proxy forwards TCP to a server until cut: then it closes every
// connection and each new one at once, as a server gone away.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex // guards the following
	cut   bool
	conns map[net.Conn]struct{}
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
		wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, up) {
		c.Close()
		up.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}

// BenchmarkGovFollower: the time to follow, from an empty ledger, a chain
// of b.N membership applications, each from a fresh key (a distinct
// signer to look up per tx, the follower's worst case), and a chain of
// b.N empty blocks.
//
//	CCGP_CLICKHOUSE=... go test -run '^$' -bench GovFollower -benchtime 2000x ./analytics/
func BenchmarkGovFollower(b *testing.B) {
	b.Run("txs", func(b *testing.B) { benchFollow(b, b.N, 0) })
	b.Run("empty-blocks", func(b *testing.B) { benchFollow(b, 0, int64(b.N)) })
}

func benchFollow(b *testing.B, txs int, blocks int64) {
	conn, _, db := chtest.Database(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}
	tn, err := govchain.GenerateTestnet(govchain.TestnetOptions{Dir: b.TempDir(), ChainID: "ccgp-analytics-bench", Validators: 1, BlockInterval: 50 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := govchain.StartNode(ctx, tn.Nodes[0].Home, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Stop()
	c, err := ln.Client()
	if err != nil {
		b.Fatal(err)
	}
	if err := c.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	hashes := make([][]byte, txs)
	for i := range txs {
		raw, err := govchain.NewTx(crypto.DevSigner(fmt.Sprintf("bench-applicant-%d", i)), c.ChainID(), 1,
			govchain.Wrap(&govchain.MsgApplyOrg{Id: fmt.Sprintf("bench-%d", i), Name: "bench"}))
		if err != nil {
			b.Fatal(err)
		}
		res, err := c.RPC().BroadcastTxSync(ctx, raw)
		if err != nil || res.Code != 0 {
			b.Fatalf("broadcast %d: %v %v", i, err, res)
		}
		hashes[i] = res.Hash
	}
	for _, h := range hashes {
		if _, err := c.WaitTx(ctx, h); err != nil && !errors.As(err, new(*govchain.TxError)) {
			b.Fatal(err)
		}
	}
	if err := ln.WaitForHeight(ctx, blocks); err != nil {
		b.Fatal(err)
	}
	top, err := c.Height(ctx)
	if err != nil {
		b.Fatal(err)
	}
	f, err := analytics.NewGovFollower(analytics.GovFollowerConfig{Chain: c, Conn: conn, DB: db, Poll: 10 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(rctx) }()
	for f.Stats().Written < top {
		if ctx.Err() != nil {
			b.Fatalf("follower at %+v, chain at %d", f.Stats(), top)
		}
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	stop()
	<-done
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".governance FINAL").Scan(&n); err != nil || n != uint64(txs) {
		b.Fatalf("%d governance rows for %d txs (%v)", n, txs, err)
	}
	b.ReportMetric(float64(txs)/el.Seconds(), "tx/s")
	b.ReportMetric(float64(top)/el.Seconds(), "blocks/s")
}
