package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/ingest"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Ceilings are the limits of the parts, measured in the same process on
// the same GOMAXPROCS as the end-to-end run.
type Ceilings struct {
	// VerifySingle is Ed25519 verifications/s, one at a time
	// (crypto/ed25519 through crypto.Verify), on every core.
	VerifySingle float64
	// VerifyBatch is verifications/s in batches of crypto.MaxBatch with
	// expanded keys cached (crypto.BatchVerifier), on every core: what
	// the relays use.
	VerifyBatch float64
	// KafkaRecords is records/s produced and consumed through an
	// in-process kfake broker (the listeners' producer settings).
	KafkaRecords float64
	// QUICMBps is MB/s (10^6 bytes) through one QUIC stream on loopback.
	QUICMBps float64
}

// MeasureCeilings measures every ceiling for about d each, with packets
// of payload bytes.
func MeasureCeilings(ctx context.Context, d time.Duration, payload int) (Ceilings, error) {
	var c Ceilings
	var err error
	if c.VerifySingle, c.VerifyBatch, err = VerifyCeiling(ctx, d, payload); err != nil {
		return c, err
	}
	if c.KafkaRecords, err = KafkaCeiling(ctx, d, payload); err != nil {
		return c, err
	}
	if c.QUICMBps, err = QUICCeiling(ctx, d); err != nil {
		return c, err
	}
	return c, nil
}

// ceilingItems signs n packets' signing bytes (payload bytes each) with 4
// app keys: the work of a relay's stage-1 check.
func ceilingItems(n, payload int) ([]crypto.SigItem, error) {
	signers := make([]crypto.Signer, 4)
	for i := range signers {
		signers[i] = crypto.DevSigner(fmt.Sprint("ceiling-app-", i))
	}
	r := rand.New(rand.NewPCG(1, 2))
	items := make([]crypto.SigItem, n)
	for i := range items {
		s := signers[i%len(signers)]
		addr := crypto.SignerAddress(s)
		p := &amdp.Packet{PipeId: fmt.Sprint("ceiling-", i%len(signers)), Sequence: uint64(i + 1), Operation: amdp.OpWrite,
			Payload: benchPayload(r, uint64(i+1), payload), TimeoutUnixMs: 1 << 42,
			Credential: &amdp.Credential{Signer: addr[:], Suite: string(s.Suite())}}
		msg := amdp.PacketSigningBytes(p)
		sig, err := s.Sign(msg)
		if err != nil {
			return nil, err
		}
		items[i] = crypto.SigItem{Suite: s.Suite(), PublicKey: s.PublicKey(), Message: msg, Signature: sig}
	}
	return items, nil
}

// VerifyCeiling measures signature verifications per second on every core
// for about d each: one at a time (the suite's Verify) and in batches.
func VerifyCeiling(ctx context.Context, d time.Duration, payload int) (single, batch float64, err error) {
	items, err := ceilingItems(4*crypto.MaxBatch, payload)
	if err != nil {
		return 0, 0, err
	}
	workers := runtime.GOMAXPROCS(0)
	run := func(work func(w int, stop *atomic.Bool) (int, error)) (float64, error) {
		var stop atomic.Bool
		counts := make([]int, workers)
		errs := make([]error, workers)
		var wg sync.WaitGroup
		start := time.Now()
		t := time.AfterFunc(d, func() { stop.Store(true) })
		defer t.Stop()
		cancel := context.AfterFunc(ctx, func() { stop.Store(true) })
		defer cancel()
		for w := range workers {
			wg.Go(func() { counts[w], errs[w] = work(w, &stop) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n := 0
		for _, c := range counts {
			n += c
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	single, err = run(func(w int, stop *atomic.Bool) (int, error) {
		n := 0
		for i := w; !stop.Load(); i++ {
			it := &items[i%len(items)]
			if err := crypto.Verify(it.Suite, it.PublicKey, it.Message, it.Signature); err != nil {
				return n, fmt.Errorf("bench: verify ceiling: %w", err)
			}
			n++
		}
		return n, nil
	})
	if err != nil {
		return 0, 0, err
	}
	keys := crypto.NewKeyCache(16)
	batch, err = run(func(w int, stop *atomic.Bool) (int, error) {
		v := crypto.NewBatchVerifier(keys)
		errs := make([]error, crypto.MaxBatch)
		n := 0
		for i := w; !stop.Load(); i++ {
			lo := (i % 4) * crypto.MaxBatch
			if !v.Verify(items[lo:lo+crypto.MaxBatch], errs) {
				return n, fmt.Errorf("bench: batch verify ceiling: %w", errors.Join(errs...))
			}
			n += crypto.MaxBatch
		}
		return n, nil
	})
	return single, batch, err
}

// KafkaCeiling measures records/s through an in-process kfake broker: one
// producer with the listeners' settings (ingest.NewKafkaClient) produces
// for about d to 8 partitions, keyed by 12 pipe ids, while one consumer
// reads; the rate is records over the time until the consumer has them
// all.
func KafkaCeiling(ctx context.Context, d time.Duration, payload int) (float64, error) {
	const topic = "ccgp.ceiling"
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, topic))
	if err != nil {
		return 0, fmt.Errorf("bench: kafka ceiling: %w", err)
	}
	defer kc.Close()
	prod, err := ingest.NewKafkaClient(kc.ListenAddrs())
	if err != nil {
		return 0, err
	}
	defer prod.Close()
	cons, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		return 0, fmt.Errorf("bench: kafka ceiling consumer: %w", err)
	}
	defer cons.Close()

	value := benchPayload(rand.New(rand.NewPCG(3, 4)), 1, payload+150) // about an encoded packet
	keys := make([][]byte, 12)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "pipe-%d", i)
	}
	var produced, failed atomic.Int64
	consumed := make(chan int64, 1)
	var stopProducing atomic.Bool
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	go func() {
		var n int64
		for cctx.Err() == nil {
			fs := cons.PollFetches(cctx)
			n += int64(fs.NumRecords())
			if stopProducing.Load() && n >= produced.Load() {
				break
			}
		}
		consumed <- n
	}()
	for i := 0; time.Since(start) < d && ctx.Err() == nil; i++ {
		prod.Produce(ctx, &kgo.Record{Topic: topic, Key: keys[i%len(keys)], Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
			}
		})
		produced.Add(1)
	}
	if err := prod.Flush(ctx); err != nil {
		return 0, fmt.Errorf("bench: kafka ceiling: flush: %w", err)
	}
	stopProducing.Store(true)
	n := <-consumed
	el := time.Since(start)
	if failed.Load() > 0 {
		return 0, fmt.Errorf("bench: kafka ceiling: %d records failed", failed.Load())
	}
	if n < produced.Load() {
		return 0, fmt.Errorf("bench: kafka ceiling: consumed %d of %d records", n, produced.Load())
	}
	return float64(n) / el.Seconds(), nil
}

// QUICCeiling measures MB/s through one QUIC stream on loopback for about
// d: the writer buffers (64 KiB), the reader discards.
func QUICCeiling(ctx context.Context, d time.Duration) (float64, error) {
	ca, err := crypto.NewDevCA("ccgp bench CA")
	if err != nil {
		return 0, err
	}
	cert, err := ca.Issue("bench-quic", nil)
	if err != nil {
		return 0, err
	}
	const alpn = "ccgp-bench"
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}, nil)
	if err != nil {
		return 0, fmt.Errorf("bench: quic ceiling: %w", err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	type result struct {
		n   int64
		el  time.Duration
		err error
	}
	got := make(chan result, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer conn.CloseWithError(0, "")
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			got <- result{err: err}
			return
		}
		start := time.Now()
		n, err := io.Copy(io.Discard, str)
		got <- result{n: n, el: time.Since(start), err: err}
	}()
	conn, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1",
		NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}, nil)
	if err != nil {
		return 0, fmt.Errorf("bench: quic ceiling: dial: %w", err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return 0, fmt.Errorf("bench: quic ceiling: open stream: %w", err)
	}
	w := bufio.NewWriterSize(str, 64<<10)
	chunk := make([]byte, 16<<10)
	for start := time.Now(); time.Since(start) < d; {
		if _, err := w.Write(chunk); err != nil {
			return 0, fmt.Errorf("bench: quic ceiling: write: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		return 0, fmt.Errorf("bench: quic ceiling: flush: %w", err)
	}
	str.Close()
	r := <-got
	if r.err != nil {
		return 0, fmt.Errorf("bench: quic ceiling: read: %w", r.err)
	}
	return float64(r.n) / r.el.Seconds() / 1e6, nil
}
