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

	"github.com/ccgpmesh/ccgp/bench"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

var (
	buildOnce sync.Once
	ccgpBin   string
	buildErr  error
)

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

func TestKillRelayNothingLost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a relay process")
	}
	bin := binary(t)
	c := startCluster(t, func(o *bench.ClusterOptions) {
		o.External = "org-2"
		o.Pipes = []govchain.PipeSpec{{ID: "pipe-1-2", From: "org-1", To: "org-2", Mode: govchain.ConsistencyMode_MODE_OPTIMISTIC}}
	})
	var logs bytes.Buffer
	var logMu sync.Mutex
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "relay", "start", "--config", c.External.Config, "--insecure-dev-keys", "--log-level", "warn")
		cmd.Env = append(os.Environ(), "CCGP_HOME="+c.External.Dir)
		cmd.Stdout, cmd.Stderr = &lockedWriter{&logs, &logMu}, &lockedWriter{&logs, &logMu}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	proc := start()
	t.Cleanup(func() {
		if proc.ProcessState == nil {
			proc.Process.Kill()
			proc.Wait()
		}
		if t.Failed() {
			logMu.Lock()
			t.Logf("relay process output:\n%s", logs.String())
			logMu.Unlock()
		}
	})

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
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	proc.Wait()
	time.Sleep(500 * time.Millisecond)
	proc = start()
	<-done

	sent := c.Tracker.SentCount()
	waitUntil(t, 90*time.Second, func() string {
		return fmt.Sprintf("%d of %d receipted", c.Tracker.ReceiptedDistinct(), sent)
	}, func() bool { return c.Tracker.ReceiptedDistinct() == sent })

	// Stop it cleanly and read the destination chain's own records.
	proc.Process.Signal(os.Interrupt)
	if err := proc.Wait(); err != nil {
		t.Fatalf("relay did not stop cleanly: %v", err)
	}
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
