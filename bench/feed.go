package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/ingest/simchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// The load: every packet is signed before the measurement starts, so that
// the apps' signing (load generation, not the system under test) does not
// share the cores with the relays. A feeder per source chain submits the
// pre-signed packets of that chain's pipes, in a closed loop (a bounded
// number in flight per pipe) or an open loop (a fixed rate).

// ringSize bounds how many recent packets per pipe the probe can time:
// a packet is timed while fewer than ringSize newer ones of its pipe were
// submitted after it.
const ringSize = 1 << 17

// pipeFeed is one pipe's load and bookkeeping.
type pipeFeed struct {
	id       string
	src, dst int // chain indexes
	signer   crypto.Signer
	cred     *amdp.Credential
	payload  int

	mu      sync.Mutex     // guards packets, signed and the live signer's state
	packets []*amdp.Packet // pre-signed, in sequence order; submitted ones are dropped
	signed  uint64         // highest sequence signed
	// live: when the pre-signed packets run out, sign the next one on
	// demand (long runs, where a pool would be the biggest thing in
	// memory).
	live    bool
	rng     *rand.Rand
	buf     []byte
	timeout uint64

	submitted atomic.Uint64 // packets handed to the source chain
	done      atomic.Uint64 // packets whose receipts the source relay recorded

	// ring holds, per sequence (mod ringSize), the packet's submission
	// number on its chain: written before the packet is submitted, read
	// by the probe and the governance watcher. Atomics, because the
	// happens-before runs through Kafka and QUIC, which the race detector
	// cannot see.
	ring []ringEntry
}

type ringEntry struct{ seq, n atomic.Uint64 }

func (f *pipeFeed) record(seq, n uint64) {
	e := &f.ring[seq%ringSize]
	e.n.Store(n)
	e.seq.Store(seq)
}

// submission returns the chain-wide submission number of packet seq, if
// it is still in the ring.
func (f *pipeFeed) submission(seq uint64) (uint64, bool) {
	e := &f.ring[seq%ringSize]
	if e.seq.Load() != seq {
		return 0, false
	}
	n := e.n.Load()
	return n, e.seq.Load() == seq
}

// pending is how many pre-signed packets are left.
func (f *pipeFeed) pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.packets)
}

// take removes and returns the next pre-signed packet, or signs one when
// the feed is live; nil when there is none.
func (f *pipeFeed) take() *amdp.Packet {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.packets) == 0 {
		if !f.live {
			return nil
		}
		if f.rng == nil {
			f.rng = rand.New(rand.NewPCG(f.signed, uint64(len(f.id))))
			f.timeout = uint64(time.Now().Add(24 * time.Hour).UnixMilli())
		}
		f.signed++
		p := &amdp.Packet{PipeId: f.id, Sequence: f.signed, Operation: amdp.OpWrite,
			Payload: benchPayload(f.rng, f.signed, f.payload), TimeoutUnixMs: f.timeout, Credential: f.cred}
		f.buf = amdp.AppendPacketSigningBytes(f.buf[:0], p)
		sig, err := f.signer.Sign(f.buf)
		if err != nil {
			f.signed--
			return nil // an in-memory key does not fail; the feeder then stops as exhausted
		}
		p.Signature = sig
		return p
	}
	p := f.packets[0]
	f.packets[0] = nil
	f.packets = f.packets[1:]
	return p
}

// presign signs n more packets for every feed, on all cores.
func presign(feeds []*pipeFeed, n int) error {
	if n <= 0 {
		return nil
	}
	type job struct {
		f     *pipeFeed
		first uint64
		out   []*amdp.Packet
	}
	var jobs []*job
	for _, f := range feeds {
		f.mu.Lock()
		first := f.signed + 1
		f.signed += uint64(n)
		f.mu.Unlock()
		// Chunks of 4096 spread one pipe over the cores too.
		for lo := 0; lo < n; lo += 4096 {
			jobs = append(jobs, &job{f: f, first: first + uint64(lo), out: make([]*amdp.Packet, min(4096, n-lo))})
		}
	}
	timeout := uint64(time.Now().Add(6 * time.Hour).UnixMilli())
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, runtime.GOMAXPROCS(0))
	for w := range errs {
		wg.Go(func() {
			var buf []byte
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				j := jobs[i]
				r := rand.New(rand.NewPCG(j.first, uint64(len(j.f.id))))
				for k := range j.out {
					seq := j.first + uint64(k)
					p := &amdp.Packet{PipeId: j.f.id, Sequence: seq, Operation: amdp.OpWrite,
						Payload: benchPayload(r, seq, j.f.payload), TimeoutUnixMs: timeout, Credential: j.f.cred}
					buf = amdp.AppendPacketSigningBytes(buf[:0], p)
					sig, err := j.f.signer.Sign(buf)
					if err != nil {
						errs[w] = fmt.Errorf("bench: sign %s/%d: %w", j.f.id, seq, err)
						return
					}
					p.Signature = sig
					j.out[k] = p
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, j := range jobs {
		j.f.mu.Lock()
		j.f.packets = append(j.f.packets, j.out...)
		j.f.mu.Unlock()
	}
	return nil
}

// benchPayload is a JSON-like contract call of size bytes, different for
// every packet (amounts and accounts vary), so that zstd sees what a real
// stream of calls looks like rather than one payload repeated.
func benchPayload(r *rand.Rand, seq uint64, size int) []byte {
	b := make([]byte, 0, size)
	b = fmt.Appendf(b, `{"op":"transfer","seq":%d,"from":"acct-%06d","to":"acct-%06d","amount":%d,"asset":"CNY","memo":"`,
		seq, r.IntN(1_000_000), r.IntN(1_000_000), r.IntN(10_000_000))
	const memo = "invoice settlement for shipment batch "
	for len(b) < size-2 {
		if r.IntN(8) == 0 {
			b = append(b, byte('0'+r.IntN(10)))
		} else {
			b = append(b, memo[len(b)%len(memo)])
		}
	}
	b = append(b, `"}`...)
	return b[:size]
}

// errExhausted is returned by a feeder whose pre-signed packets ran out.
var errExhausted = errors.New("bench: pre-signed packets exhausted")

// feeder submits the packets of one source chain's pipes. Its state
// survives pauses (one run at a time).
type feeder struct {
	chain *simchain.Chain
	pipes []*pipeFeed
	n     uint64        // submissions so far on this chain (offset by the chain's requests at start)
	wake  chan struct{} // receipts arrived: closed-loop room may have opened
}

// runClosed keeps up to window packets per pipe in flight (submitted, not
// yet receipted) until ctx ends or the packets run out.
func (fd *feeder) runClosed(ctx context.Context, window int) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		progress, left := false, false
		for _, f := range fd.pipes {
			for int(f.submitted.Load()-f.done.Load()) < window {
				p := f.take()
				if p == nil {
					break
				}
				left = true
				if err := fd.submit(ctx, f, p); err != nil {
					return err
				}
				progress = true
			}
			if f.pending() > 0 {
				left = true
			}
		}
		if !left {
			return errExhausted
		}
		if progress {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-fd.wake:
		case <-tick.C:
		}
	}
}

// runOpen submits each pipe's share of rate packets/s until ctx ends or
// the packets run out. A feeder that falls behind catches up at once (the
// open loop does not wait for the system).
func (fd *feeder) runOpen(ctx context.Context, ratePerPipe float64) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	base := make([]uint64, len(fd.pipes))
	for i, f := range fd.pipes {
		base[i] = f.submitted.Load()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		due := uint64(ratePerPipe * time.Since(start).Seconds())
		for i, f := range fd.pipes {
			for f.submitted.Load()-base[i] < due {
				p := f.take()
				if p == nil {
					return errExhausted
				}
				if err := fd.submit(ctx, f, p); err != nil {
					return err
				}
			}
		}
	}
}

func (fd *feeder) submit(ctx context.Context, f *pipeFeed, p *amdp.Packet) error {
	fd.n++
	f.record(p.Sequence, fd.n)
	if _, err := fd.chain.Submit(ctx, p); err != nil {
		if ctx.Err() != nil {
			// The packet may or may not be in the mempool; put it back only
			// if the chain refused it. A cancelled Submit that waited for
			// room did not admit it.
			fd.n--
			f.mu.Lock()
			f.packets = append([]*amdp.Packet{p}, f.packets...)
			f.mu.Unlock()
			return nil
		}
		return fmt.Errorf("bench: submit %s/%d: %w", p.PipeId, p.Sequence, err)
	}
	f.submitted.Add(1)
	return nil
}

// probe follows packets from the source chain to their receipts: the
// source relay's receipt hook calls receipts for every receipted batch.
type probe struct {
	clock      *chainClock
	feeds      map[string]*pipeFeed
	relayChain map[string]int // relay id → chain index

	recording atomic.Bool // the measurement window is open
	delivered Histogram   // source commit → destination chain commit
	receipted Histogram   // source commit → receipts recorded at the source relay
	anchored  Histogram   // source commit → open-batch anchor committed on govchain
	confirmed Histogram   // source commit → batch confirmed on govchain

	nReceipted atomic.Uint64 // receipts for packets of the feeds
	nRejected  atomic.Uint64 // of which not delivered
	untimed    atomic.Uint64 // receipts the probe could not time (ring overrun, clock gap)

	wakeAll func()
	wire    *wireSampler
}

// receipts is the source relay's OnReceipts hook; it must not block.
func (pr *probe) receipts(b *amdp.Batch, rb *amdp.ReceiptBatch) {
	now := pr.clock.now()
	packets := b.GetPackets()
	inOrder := len(packets) == len(rb.Receipts) && len(packets) > 0 &&
		sameID(packets[0], rb.Receipts[0].PacketId) && sameID(packets[len(packets)-1], rb.Receipts[len(packets)-1].PacketId)
	var byID map[[32]byte]*amdp.Packet
	if !inOrder {
		byID = make(map[[32]byte]*amdp.Packet, len(packets))
		for _, p := range packets {
			byID[p.ID()] = p
		}
	}
	dst := pr.relayChain[rb.GetHeader().GetFromRelay()]
	rec := pr.recording.Load()
	var counted uint64
	for i, r := range rb.Receipts {
		var p *amdp.Packet
		if inOrder {
			p = packets[i]
		} else {
			p = byID[[32]byte(r.PacketId)]
		}
		if p == nil {
			continue
		}
		f := pr.feeds[p.PipeId]
		if f == nil {
			continue
		}
		counted++
		f.done.Add(1)
		if r.Status != amdp.StatusDelivered {
			pr.nRejected.Add(1)
			continue
		}
		if !rec {
			continue
		}
		n, ok := f.submission(p.Sequence)
		var src time.Duration
		if ok {
			src, ok = pr.clock.requestTime(f.src, n)
		}
		if !ok {
			pr.untimed.Add(1)
			continue
		}
		pr.receipted.Record(now - src)
		if at, ok := pr.clock.heightTime(dst, r.DestHeight); ok {
			pr.delivered.Record(at - src)
		}
	}
	pr.nReceipted.Add(counted)
	if pr.wire != nil {
		pr.wire.offer(b, rb)
	}
	if counted > 0 {
		pr.wakeAll()
	}
}

// timed records d in h for packets [first, last] of pipe, committed on
// govchain at at; used by the governance watcher.
func (pr *probe) timed(h *Histogram, pipe string, first, last uint64, at time.Duration) uint64 {
	f := pr.feeds[pipe]
	if f == nil || last < first {
		return 0
	}
	rec := pr.recording.Load()
	for seq := first; rec && seq <= last; seq++ {
		n, ok := f.submission(seq)
		var src time.Duration
		if ok {
			src, ok = pr.clock.requestTime(f.src, n)
		}
		if ok {
			h.Record(at - src)
		}
	}
	return last - first + 1
}

func sameID(p *amdp.Packet, id []byte) bool {
	pid := p.ID()
	return bytes.Equal(pid[:], id)
}

// wireSampler measures what batches cost on the wire: every sampleEvery-th
// receipted batch is encoded again, off the hot path, as the mesh frames it
// (zstd) and uncompressed, with its receipt frame.
type wireSampler struct {
	every uint64
	seen  atomic.Uint64
	in    chan wireSample

	mu                              sync.Mutex // guards the sums
	packets, frameB, rawB, receiptB uint64
}

type wireSample struct {
	b  *amdp.Batch
	rb *amdp.ReceiptBatch
}

func newWireSampler(every uint64) *wireSampler {
	return &wireSampler{every: every, in: make(chan wireSample, 8)}
}

// offer hands one batch in every `every` to the sampler, never blocking.
func (w *wireSampler) offer(b *amdp.Batch, rb *amdp.ReceiptBatch) {
	if w.seen.Add(1)%w.every != 0 {
		return
	}
	select {
	case w.in <- wireSample{b, rb}:
	default:
	}
}

func (w *wireSampler) run(ctx context.Context) error {
	enc, err := amdp.NewEncoder()
	if err != nil {
		return err
	}
	defer enc.Close()
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-w.in:
			frame, err := amdp.EncodeFrame(buf[:0], s.b, enc)
			if err != nil {
				continue
			}
			fb := len(frame)
			raw, err := amdp.EncodeBatch(frame[:0], s.b)
			if err != nil {
				continue
			}
			rawB := len(raw)
			rf, err := amdp.EncodeReceiptFrame(raw[:0], s.rb, enc)
			if err != nil {
				continue
			}
			buf = rf
			w.mu.Lock()
			w.packets += uint64(len(s.b.Packets))
			w.frameB += uint64(fb)
			w.rawB += uint64(rawB)
			w.receiptB += uint64(len(rf))
			w.mu.Unlock()
		}
	}
}

// result returns AMDP frame bytes per packet (batch and receipt frames)
// and the zstd ratio of batch frames (uncompressed protobuf / frame).
func (w *wireSampler) result() (perPacket, ratio float64, packets uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.packets == 0 || w.frameB == 0 {
		return 0, 0, 0
	}
	return float64(w.frameB+w.receiptB) / float64(w.packets), float64(w.rawB) / float64(w.frameB), w.packets
}
