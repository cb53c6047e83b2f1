package ingest_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/ingest"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// failProduce makes kfake drop the connection of every produce request
// while it returns true, and counts the requests it failed.
func failProduce(kc *kfake.Cluster, failing func() bool) *atomic.Int32 {
	failed := &atomic.Int32{}
	kc.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if !failing() {
			return nil, nil, false
		}
		failed.Add(1)
		return nil, errors.New("kfake: produce refused by the test"), true
	})
	return failed
}

// TestListenerServeSurvivesProduceFailures: Kafka refusing produce
// requests for a while does not end Serve (a relay's listener): it
// counts and logs the failure, resumes from its checkpoint, and every
// request reaches the topic, none of them changed, none of them lost.
func TestListenerServeSurvivesProduceFailures(t *testing.T) {
	ctx := testCtx(t)
	kc := newCluster(t)
	c := newChain(t, simchain.Options{})
	s := newSender(c, 2)
	// The client gives a record up after a second, as a relay's does
	// after its delivery timeout: then the listener sees the failure.
	cl := newProducer(t, kc, kgo.RecordDeliveryTimeout(time.Second), kgo.RetryTimeout(time.Second),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }))
	l, err := ingest.NewListener(c, cl, ingest.FileCheckpoint(filepath.Join(t.TempDir(), "cp")),
		ingest.CheckpointEvery(5*time.Millisecond), ingest.RetryBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Serve(sctx) }()
	t.Cleanup(func() { cancel(); <-done })

	s.send(t, ctx, 10)
	waitUntil(t, 15*time.Second, "produced", func() bool { return l.Stats().Produced >= uint64(s.count()) })
	var broken atomic.Bool
	broken.Store(true)
	failed := failProduce(kc, broken.Load)
	s.send(t, ctx, 10)
	waitUntil(t, 15*time.Second, "a produce failure", func() bool { return l.Stats().Restarts > 0 })
	s.send(t, ctx, 5) // while Kafka still refuses
	broken.Store(false)
	s.send(t, ctx, 5)
	recs := consumeAll(t, kc, s.count())
	select {
	case err := <-done:
		t.Fatalf("Serve returned after a produce failure: %v", err)
	default:
	}
	if r := l.Stats().Restarts; r == 0 {
		t.Errorf("restarts = 0: the produce failures went unreported")
	}
	seen := map[[32]byte]int{}
	for _, r := range recs {
		p, err := amdp.DecodePacket(r.Value, amdp.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		want, ok := s.sent[p.ID()]
		if !ok || !proto.Equal(p, want) {
			t.Fatalf("record %s/%d was never sent as it is", p.PipeId, p.Sequence)
		}
		seen[p.ID()]++
	}
	dups := 0
	for id, p := range s.sent {
		switch n := seen[id]; {
		case n == 0:
			t.Errorf("request %s/%d lost", p.PipeId, p.Sequence)
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("%d requests, %d records, %d re-produced (the router drops those by sequence), %d restarts, %d produce requests failed",
		len(s.sent), len(recs), dups, l.Stats().Restarts, failed.Load())
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	done <- nil
	if !errors.Is(context.Cause(sctx), context.Canceled) {
		t.Fatal(context.Cause(sctx))
	}
}
