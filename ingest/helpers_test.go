package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/ingest"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

const topic = ingest.DefaultTopic

func newCluster(t testing.TB) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newProducer(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := ingest.NewKafkaClient(c.ListenAddrs(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newChain(t testing.TB, opts simchain.Options) *simchain.Chain {
	t.Helper()
	if opts.ID == "" {
		opts.ID = "sim-a"
	}
	if opts.BlockInterval == 0 {
		opts.BlockInterval = 10 * time.Millisecond
	}
	c, err := simchain.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// running is a listener's Run in a goroutine that the test owns.
type running struct {
	l      *ingest.Listener
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, l *ingest.Listener) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{l: l, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- l.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns its result (once; later calls return nil).
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- nil
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

// wait waits for Run to return by itself.
func (r *running) wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- nil
		return err
	case <-time.After(d):
		t.Fatalf("Run still running after %v", d)
		return nil
	}
}

func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sender sends requests on several pipes and remembers them by id.
type sender struct {
	mu   sync.Mutex
	sent map[[32]byte]*amdp.Packet
	apps []*simchain.App
}

func newSender(c *simchain.Chain, pipes int) *sender {
	s := &sender{sent: make(map[[32]byte]*amdp.Packet)}
	for i := range pipes {
		s.apps = append(s.apps, &simchain.App{Chain: c, Signer: crypto.DevSigner("app"), Pipe: fmt.Sprintf("a->b/%d", i)})
	}
	return s
}

// send sends n requests on every pipe, the pipes concurrently.
func (s *sender) send(t testing.TB, ctx context.Context, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, a := range s.apps {
		wg.Go(func() {
			for i := range n {
				p, err := a.Send(ctx, fmt.Appendf(nil, "request %d", i))
				if err != nil {
					t.Error(err)
					return
				}
				s.mu.Lock()
				s.sent[p.ID()] = p
				s.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func (s *sender) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// consumeAll reads the topic from the start until it holds want records,
// then a little longer to catch any beyond them.
func consumeAll(t testing.TB, c *kfake.Cluster, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	poll := func(d time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		fs := cl.PollFetches(ctx)
		for _, e := range fs.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) {
				t.Fatalf("consume: %v", e.Err)
			}
		}
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(recs) < want {
		if time.Now().After(deadline) {
			t.Fatalf("consumed %d records, want %d", len(recs), want)
		}
		poll(time.Second)
	}
	poll(300 * time.Millisecond)
	return recs
}

func header(t testing.TB, r *kgo.Record, key string) []byte {
	t.Helper()
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	t.Fatalf("record without header %s", key)
	return nil
}

func height(t testing.TB, r *kgo.Record) uint64 {
	t.Helper()
	h, err := strconv.ParseUint(string(header(t, r, ingest.HeaderHeight)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// flakyCheckpoint fails the first Save of a height at or above failFrom.
type flakyCheckpoint struct {
	ingest.FileCheckpoint
	failFrom uint64

	mu     sync.Mutex
	failed bool
}

var errFlaky = errors.New("disk said no")

func (f *flakyCheckpoint) Save(h uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failed && h >= f.failFrom {
		f.failed = true
		return errFlaky
	}
	return f.FileCheckpoint.Save(h)
}
