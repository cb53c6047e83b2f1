package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

var (
	buildOnce sync.Once
	ccgpBin   string
	buildErr  error
)

// TestMain removes the binary that binary built, once every test ran.
func TestMain(m *testing.M) {
	code := m.Run()
	if ccgpBin != "" {
		os.RemoveAll(filepath.Dir(ccgpBin))
	}
	os.Exit(code)
}

// binary builds cmd/ccgp once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ccgp-bin-")
		if err != nil {
			buildErr = err
			return
		}
		ccgpBin = filepath.Join(dir, "ccgp")
		out, err := exec.Command("go", "build", "-o", ccgpBin, "github.com/ccgpmesh/ccgp/cmd/ccgp").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return ccgpBin
}

// relayProcess runs the cluster's external relay as a `ccgp relay start`
// process; its output is shown if the test fails, and it is killed at
// cleanup if still running.
type relayProcess struct {
	t    *testing.T
	bin  string
	ext  *bench.ExternalRelay
	cmd  *exec.Cmd
	logs bytes.Buffer
	mu   sync.Mutex
}

func startRelayProcess(t *testing.T, c *bench.Cluster) *relayProcess {
	t.Helper()
	p := &relayProcess{t: t, bin: binary(t), ext: c.External}
	p.start()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("relay process output:\n%s", p.logs.String())
			p.mu.Unlock()
		}
	})
	return p
}

func (p *relayProcess) start() {
	p.t.Helper()
	cmd := exec.Command(p.bin, "relay", "start", "--config", p.ext.Config, "--insecure-dev-keys", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "CCGP_HOME="+p.ext.Dir)
	cmd.Stdout, cmd.Stderr = &lockedWriter{&p.logs, &p.mu}, &lockedWriter{&p.logs, &p.mu}
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd = cmd
}

// kill9 kills the process with SIGKILL (nothing flushed, nothing closed)
// and starts it again.
func (p *relayProcess) kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatal(err)
	}
	p.cmd.Wait()
	time.Sleep(500 * time.Millisecond)
	p.start()
}

// stop stops the process with SIGINT and fails the test unless it stops
// cleanly.
func (p *relayProcess) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(os.Interrupt)
	if err := p.cmd.Wait(); err != nil {
		p.t.Fatalf("relay did not stop cleanly: %v", err)
	}
}

func TestKillRelayNothingLost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a relay process")
	}
	c := startCluster(t, func(o *bench.ClusterOptions) {
		o.External = "org-2"
		o.Pipes = []govchain.PipeSpec{{ID: "pipe-1-2", From: "org-1", To: "org-2", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC}}
	})
	proc := startRelayProcess(t, c)

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ { // 5 s of traffic into the relay that gets killed
			sendOn(ctx, t, c, "pipe-1-2", 12, func(j int) string { return fmt.Sprintf("k #%d.%d", i, j) })
			time.Sleep(100 * time.Millisecond)
		}
	}()
	time.Sleep(2 * time.Second)
	proc.kill9()
	<-done

	sent := c.Tracker.SentCount()
	waitUntil(t, 90*time.Second, func() string {
		return fmt.Sprintf("%d of %d receipted", c.Tracker.ReceiptedDistinct(), sent)
	}, func() bool { return c.Tracker.ReceiptedDistinct() == sent })

	// Stop it cleanly and read the destination chain's own records.
	proc.stop()
	ch, err := simchain.Open(c.External.ChainDir, simchain.Options{ID: "chain-org-2"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	missing := 0
	for _, id := range c.Tracker.SentIDs() {
		d, ok, err := ch.FindDelivery(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || d.Status != amdp.StatusDelivered {
			missing++
		}
	}
	st := ch.Stats()
	if missing != 0 || st.Duplicates != 0 || int(st.Delivered) != sent {
		t.Fatalf("after kill -9: %d of %d missing, %d duplicated, chain delivered %d", missing, sent, st.Duplicates, st.Delivered)
	}
	t.Logf("kill -9 mid-stream: %d packets, each delivered once (chain records: %+v)", sent, st)
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestKillSourceRelay kills -9 the SOURCE relay's process mid-stream: it
// holds uncommitted Kafka offsets, queued open anchors and confirmations,
// and batches its verifier took but had not settled. The app on its
// chain keeps sending. After the restart nothing is lost or doubled on
// the destination chain's own records, every request's receipts are
// anchored on the governance chain (proven reads), nothing was rolled
// back or sent to MANUAL, and the resends really happened: the
// destination suppressed duplicates.
//
// The relay process cannot read the destination chain (another org's,
// in this process): until destination chains serve read-only endpoints
// its verifier proves receipts against their anchors but cannot confirm
// (DESIGN §5), so DELIVERED is as far as the chain's word goes here.
func TestKillSourceRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a relay process")
	}
	const total = 1500
	reg := prometheus.NewRegistry()
	c := startCluster(t, func(o *bench.ClusterOptions) {
		o.External = "org-1"
		o.ExternalApp, o.ExternalRate = total, 150
		o.Metrics = reg
		o.Pipes = []govchain.PipeSpec{{ID: "pipe-1-2", From: "org-1", To: "org-2", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC}}
	})
	dest := c.Chains["org-2"]
	proc := startRelayProcess(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()

	waitUntil(t, 60*time.Second, func() string { return fmt.Sprintf("destination executed %d", dest.Stats().Delivered) },
		func() bool { return dest.Stats().Delivered >= 300 })
	proc.kill9()
	killedAt := dest.Stats().Delivered
	waitUntil(t, 120*time.Second, func() string { return fmt.Sprintf("destination executed %d of %d", dest.Stats().Delivered, total) },
		func() bool { return dest.Stats().Delivered >= total })

	refs := pipeRefs("pipe-1-2", total)
	got := requireStates(ctx, t, c, refs, func(s govchain.PacketState) bool {
		return s == govchain.PacketState_PACKET_DELIVERED || s == govchain.PacketState_PACKET_CONFIRMED
	})
	proc.stop()

	src := openSourceChain(t, c, "pipe-1-2", total)
	if rb := src.Stats().RolledBack; rb != 0 {
		t.Fatalf("the source chain rolled back %d requests", rb)
	}
	var missing, doubled int
	for _, r := range refs {
		rec, ok, err := dest.DeliveryRecord(ctx, amdp.PacketID(r.Pipe, r.Seq))
		switch {
		case err != nil:
			t.Fatal(err)
		case !ok:
			missing++
		case rec.Count != 1:
			doubled++
		}
	}
	st := dest.Stats()
	if missing != 0 || doubled != 0 || st.Duplicates != 0 {
		t.Fatalf("destination chain: %d missing, %d executed more than once (%+v)", missing, doubled, st)
	}
	if got[govchain.PacketState_PACKET_DELIVERED]+got[govchain.PacketState_PACKET_CONFIRMED] != total {
		t.Fatalf("states on the governance chain: %v, want all %d delivered", got, total)
	}
	suppressed := counterSum(t, reg, "ccgp_mesh_duplicates_suppressed_total")
	if suppressed == 0 {
		t.Fatal("no duplicate was suppressed at the destination: the killed relay resent nothing, so the test proved nothing")
	}
	t.Logf("source relay killed -9 after %d executions: %d requests, each executed once, receipts anchored (%v); %v duplicates suppressed at the destination",
		killedAt, total, got, suppressed)
}

// counterSum adds up every series of the counter name in reg.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestKillSourceRelayCompensating kills -9 the source relay while its
// compensator holds items: the pipe is suspended mid-stream, so the
// requests that follow are refused by governance at stage 1 and go to the
// compensator, which proves each refusal and rolls it back on the source
// chain. The kill lands once rollbacks have begun, with more queued behind
// them. After the restart every request ends once: executed once on the
// destination (DELIVERED or CONFIRMED), or rolled back once on the source
// chain (ROLLED_BACK), or with a person (MANUAL: a packet the destination
// relay refused before its chain, which no one can prove); never both
// executed and rolled back, and the source chain's rollbacks are exactly
// governance's ROLLED_BACK records.
func TestKillSourceRelayCompensating(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a relay process")
	}
	// It found two ways a kill stranded refused requests: items stored
	// with no state (Compensator.take saved before the machine's event;
	// TestRefusedSurvivesKill), and items stored before their first
	// record whose rollback governance then refused (none -> ROLLED_BACK),
	// leaving the source chain rolled back and governance with no state
	// (Item.Recorded; the machine's "restored before their first record"
	// row).
	// Few enough refusals for the compensator's pace: it waits for each
	// rollback's source-chain tx and then its exception record, one
	// request at a time (2-3 rollbacks/s here; the README's known limits).
	const total = 300
	c := startCluster(t, func(o *bench.ClusterOptions) {
		o.External = "org-1"
		o.ExternalApp, o.ExternalRate = total, 50
		o.Pipes = []govchain.PipeSpec{{ID: "pipe-1-2", From: "org-1", To: "org-2", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC}}
	})
	dest := c.Chains["org-2"]
	proc := startRelayProcess(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()

	waitUntil(t, 60*time.Second, func() string { return fmt.Sprintf("destination executed %d", dest.Stats().Delivered) },
		func() bool { return dest.Stats().Delivered >= 220 })
	if _, err := c.Gov.Submit(ctx, crypto.DevSigner("gov-org-1"), &govchain.MsgSuspendPipe{Id: "pipe-1-2", Reason: "kill test"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, func() string { return "no rollback on the governance chain yet" }, func() bool {
		return len(exceptions(t, c, govchain.PacketState_PACKET_ROLLED_BACK)) >= 5
	})
	rolledAtKill := len(exceptions(t, c, govchain.PacketState_PACKET_ROLLED_BACK))
	proc.kill9()

	refs := pipeRefs("pipe-1-2", total)
	got := requireStates(ctx, t, c, refs, func(s govchain.PacketState) bool {
		switch s {
		case govchain.PacketState_PACKET_DELIVERED, govchain.PacketState_PACKET_CONFIRMED,
			govchain.PacketState_PACKET_ROLLED_BACK, govchain.PacketState_PACKET_MANUAL:
			return true
		}
		return false
	})
	states, err := listStates(ctx, c, refs)
	if err != nil {
		t.Fatal(err)
	}
	proc.stop()

	src := openSourceChain(t, c, "pipe-1-2", total)
	rolled := got[govchain.PacketState_PACKET_ROLLED_BACK]
	if rb := src.Stats().RolledBack; rb != uint64(rolled) || rolled <= rolledAtKill {
		t.Fatalf("the source chain rolled back %d requests, governance records %d (%d at the kill): want equal, and more after the restart",
			rb, rolled, rolledAtKill)
	}
	var bothWays, doubled int
	for _, r := range refs {
		rec, ok, err := dest.DeliveryRecord(ctx, amdp.PacketID(r.Pipe, r.Seq))
		if err != nil {
			t.Fatal(err)
		}
		executed := ok && rec.Count > 0 && rec.Status == amdp.StatusDelivered
		if ok && rec.Count > 1 {
			doubled++
		}
		if executed && states[pkey{r.Pipe, r.Seq}] == govchain.PacketState_PACKET_ROLLED_BACK {
			bothWays++
		}
	}
	if bothWays != 0 || doubled != 0 || dest.Stats().Duplicates != 0 {
		t.Fatalf("%d requests executed and rolled back, %d executed twice", bothWays, doubled)
	}
	t.Logf("source relay killed -9 with %d rollbacks done and more queued: final states %v, source chain rolled back %d",
		rolledAtKill, got, src.Stats().RolledBack)
}

// pipeRefs names sequences 1..n of pipe.
func pipeRefs(pipe string, n int) []*govchain.PacketRef {
	refs := make([]*govchain.PacketRef, n)
	for i := range refs {
		refs[i] = &govchain.PacketRef{Pipe: pipe, Seq: uint64(i + 1)}
	}
	return refs
}

// openSourceChain opens the stopped external relay's chain (closed at
// cleanup) and fails the test unless it holds exactly want requests on
// pipe: the app sent them all, across the kill.
func openSourceChain(t *testing.T, c *bench.Cluster, pipe string, want uint64) *simchain.Chain {
	t.Helper()
	src, err := simchain.Open(c.External.ChainDir, simchain.Options{ID: "chain-org-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if n := src.NextSequence(pipe) - 1; n != want {
		t.Fatalf("the source chain holds %d requests, want %d", n, want)
	}
	return src
}
