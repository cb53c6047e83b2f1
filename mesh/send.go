package mesh

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Send delivers b, sealed by the caller, to the relay to and returns the
// peer's receipts once they verify: signed by the peer's registered key,
// for this batch_seq, one receipt for each packet and no other. It is the
// router's Sender.
//
// Send blocks while MaxInFlight Sends to the same peer are in progress
// (backpressure: a slow peer slows its senders, nothing queues without
// bound), while the peer is unreachable, and until the peer answers. A
// connection lost before the answer is re-dialled with exponential
// backoff and jitter, and the batch resent: the peer's delivery record
// makes that safe. So Send returns only with receipts, with an error that
// resending will not cure (an AuthError, a RemoteError, ErrBadReceipts,
// ErrBadBatch, ErrUnknownRelay, ErrNoRelayKey), with ErrClosed, or when
// ctx ends: then it returns ctx's error, wrapped with the last failure.
// Callers must therefore give ctx a deadline.
func (e *Endpoint) Send(ctx context.Context, to string, b *amdp.Batch) (*amdp.ReceiptBatch, error) {
	start := time.Now()
	rb, err := e.send(ctx, to, b)
	if err != nil {
		e.m.sendErrors.WithLabelValues(Reason(err)).Inc()
		return nil, err
	}
	e.m.batchesSent.Inc()
	e.m.sendSeconds.Observe(time.Since(start).Seconds())
	return rb, nil
}

func (e *Endpoint) send(ctx context.Context, to string, b *amdp.Batch) (*amdp.ReceiptBatch, error) {
	h := b.GetHeader()
	switch {
	case h == nil:
		return nil, fmt.Errorf("mesh: send to %s: %w: no header", to, ErrBadBatch)
	case h.FromRelay != e.cfg.RelayID:
		return nil, fmt.Errorf("mesh: send to %s: %w: batch is from %q, this is %q", to, ErrBadBatch, h.FromRelay, e.cfg.RelayID)
	case h.ToRelay != to:
		return nil, fmt.Errorf("mesh: send to %s: %w: batch is addressed to %q", to, ErrBadBatch, h.ToRelay)
	}
	suite, pub, err := e.relayKey(to)
	if err != nil {
		return nil, fmt.Errorf("mesh: send to %s: %w", to, err)
	}
	bp := e.codec.bufs.get(0)
	defer e.codec.bufs.put(bp)
	frame, err := amdp.EncodeFrame((*bp)[:0], b, e.codec.enc)
	if err != nil {
		return nil, fmt.Errorf("mesh: send to %s: %w", to, err)
	}
	*bp = frame
	f, err := e.roundTrip(ctx, to, frame)
	if err != nil {
		return nil, fmt.Errorf("mesh: send batch %d to %s: %w", h.BatchSeq, to, err)
	}
	rb, err := e.checkReceipts(f, b, to, suite, pub)
	if err != nil {
		return nil, fmt.Errorf("mesh: send batch %d to %s: %w", h.BatchSeq, to, err)
	}
	return rb, nil
}

// checkReceipts verifies the peer's answer to b.
func (e *Endpoint) checkReceipts(f amdp.Frame, b *amdp.Batch, to string, suite crypto.Suite, pub []byte) (*amdp.ReceiptBatch, error) {
	if f.Kind != amdp.FrameReceiptBatch {
		return nil, fmt.Errorf("%w: answered with a %s frame", ErrBadReceipts, f.Kind)
	}
	rb := f.ReceiptBatch
	if err := amdp.VerifyReceiptBatch(rb, suite, pub, e.cfg.Limits); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReceipts, err)
	}
	h := rb.Header
	switch {
	case h.FromRelay != to || h.ToRelay != e.cfg.RelayID:
		return nil, fmt.Errorf("%w: receipts are from %q to %q", ErrBadReceipts, h.FromRelay, h.ToRelay)
	case h.BatchSeq != b.Header.BatchSeq:
		return nil, fmt.Errorf("%w: receipts acknowledge batch %d", ErrBadReceipts, h.BatchSeq)
	case len(rb.Receipts) != len(b.Packets):
		return nil, fmt.Errorf("%w: %d receipts for %d packets", ErrBadReceipts, len(rb.Receipts), len(b.Packets))
	}
	// VerifyReceiptBatch refused duplicate ids, so with equal counts and
	// every receipt's packet in the batch, every packet has its receipt.
	want := make(map[[32]byte]struct{}, len(b.Packets))
	for _, p := range b.Packets {
		want[p.ID()] = struct{}{}
	}
	for i, r := range rb.Receipts {
		if _, ok := want[[32]byte(r.PacketId)]; !ok {
			return nil, fmt.Errorf("%w: receipts[%d] is for packet %x, not in the batch", ErrBadReceipts, i, r.PacketId)
		}
	}
	return rb, nil
}

// roundTrip sends one encoded frame to the relay to and returns its
// answer, taking an in-flight slot for the duration and retrying on
// fresh streams and connections while the transport fails.
func (e *Endpoint) roundTrip(ctx context.Context, to string, frame []byte) (amdp.Frame, error) {
	if err := e.begin(); err != nil {
		return amdp.Frame{}, err
	}
	defer e.wg.Done()
	p := e.peer(to)
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return amdp.Frame{}, fmt.Errorf("waiting for an in-flight slot: %w", context.Cause(ctx))
	case <-e.ctx.Done():
		return amdp.Frame{}, ErrClosed
	}
	defer func() { <-p.sem }()

	for attempt := 1; ; attempt++ {
		conn, err := e.connect(ctx, p)
		if err != nil {
			return amdp.Frame{}, err
		}
		f, re, err := e.exchange(ctx, conn, frame)
		switch {
		case err == nil && re != nil:
			re.Relay = to
			return amdp.Frame{}, re
		case err == nil:
			return f, nil
		case e.ctx.Err() != nil:
			return amdp.Frame{}, ErrClosed
		case ctx.Err() != nil:
			return amdp.Frame{}, fmt.Errorf("%w (last error: %v)", context.Cause(ctx), err)
		}
		if ae, ok := refusedByPeer(err, to); ok {
			e.m.rejected.WithLabelValues(Reason(ae)).Inc()
			p.drop(conn)
			return amdp.Frame{}, ae
		}
		if !isStreamError(err) {
			// The peer spoke the protocol wrongly: resending will not help.
			return amdp.Frame{}, fmt.Errorf("%w: %w", ErrBadReceipts, err)
		}
		// The stream or connection broke before the answer came: send
		// again. If the peer got the batch, its delivery record answers
		// the second copy without delivering it again.
		if conn.Context().Err() != nil {
			p.drop(conn)
		}
		e.log.Debug("exchange failed; resending", "peer", to, "attempt", attempt, "err", err)
		if serr := e.sleep(ctx, e.backoff(attempt)); serr != nil {
			if errors.Is(serr, ErrClosed) {
				return amdp.Frame{}, serr
			}
			return amdp.Frame{}, fmt.Errorf("%w (last error: %v)", serr, err)
		}
	}
}

// exchange sends frame on a new stream of conn and reads the answer: an
// amdp frame, or the peer's error frame as a RemoteError.
func (e *Endpoint) exchange(ctx context.Context, conn *quic.Conn, frame []byte) (amdp.Frame, *RemoteError, error) {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return amdp.Frame{}, nil, &streamError{err}
	}
	// Cancelling ctx resets the stream, which unblocks Write and Read.
	stop := context.AfterFunc(ctx, func() {
		str.CancelWrite(streamCanceled)
		str.CancelRead(streamCanceled)
	})
	defer stop()
	// The frame is already one buffer, so it goes out in one Write:
	// QUIC packs it into full packets.
	_, werr := str.Write(frame)
	if werr == nil {
		werr = str.Close()
	}
	// Even if the write failed, the peer may have answered: a receiver
	// that rejects a frame says why before it stops reading.
	br := bufio.NewReaderSize(str, 16<<10)
	f, re, rerr := e.codec.readFrame(br, true)
	if rerr != nil {
		str.CancelRead(streamCanceled)
		if werr != nil && isStreamError(rerr) {
			return amdp.Frame{}, nil, &streamError{werr}
		}
		return amdp.Frame{}, nil, rerr
	}
	if err := expectEOF(br); err != nil {
		str.CancelRead(streamCanceled)
		if !isStreamError(err) {
			return amdp.Frame{}, nil, err
		}
		// The answer is complete; a reset after it changes nothing.
	}
	return f, re, nil
}

// peer is the sending side's state for one destination relay: its
// in-flight slots and its connection.
type peer struct {
	id  string
	sem chan struct{} // one slot per Send in flight

	mu       sync.Mutex // guards the following
	conn     *quic.Conn
	dialing  chan struct{} // closed when the dial in progress ends
	failures int           // consecutive failed dials
	retryAt  time.Time     // no dial before this
	lastErr  error         // of the last failed dial
	closed   bool
}

func (e *Endpoint) peer(id string) *peer {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.peers[id]
	if p == nil {
		p = &peer{id: id, sem: make(chan struct{}, e.cfg.MaxInFlight)}
		e.peers[id] = p
	}
	return p
}

// connect returns p's connection, dialling it if there is none. One dial
// at a time per peer: the others wait for it. After a failed dial, no one
// dials again before the backoff has passed; a Send waits that out (or
// until ctx ends) and then dials again.
func (e *Endpoint) connect(ctx context.Context, p *peer) (*quic.Conn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if p.conn != nil {
			if p.conn.Context().Err() == nil {
				c := p.conn
				p.mu.Unlock()
				return c, nil
			}
			p.conn = nil
		}
		if ch := p.dialing; ch != nil {
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("waiting for a connection: %w", context.Cause(ctx))
			case <-e.ctx.Done():
				return nil, ErrClosed
			}
		}
		if wait := time.Until(p.retryAt); wait > 0 {
			last := p.lastErr
			p.mu.Unlock()
			if err := e.sleep(ctx, wait); err != nil {
				if errors.Is(err, ErrClosed) {
					return nil, err
				}
				return nil, fmt.Errorf("%w (last connection error: %v)", err, last)
			}
			continue
		}
		ch := make(chan struct{})
		p.dialing = ch
		p.mu.Unlock()

		conn, err := e.dial(ctx, p.id)

		p.mu.Lock()
		p.dialing = nil
		close(ch)
		switch {
		case err == nil && p.closed:
			conn.CloseWithError(connShutdown, "relay shutting down")
			err = ErrClosed
		case err == nil:
			p.conn, p.failures, p.retryAt, p.lastErr = conn, 0, time.Time{}, nil
		case ctx.Err() != nil || e.ctx.Err() != nil:
			// Our own cancellation says nothing about the peer.
		default:
			p.failures++
			p.lastErr = err
			p.retryAt = time.Now().Add(e.backoff(p.failures))
		}
		failures := p.failures
		p.mu.Unlock()

		switch {
		case err == nil:
			return conn, nil
		case e.ctx.Err() != nil:
			return nil, ErrClosed
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w (last connection error: %v)", context.Cause(ctx), err)
		}
		var ae *AuthError
		if errors.As(err, &ae) || errors.Is(err, ErrUnknownRelay) {
			if ae != nil {
				e.m.rejected.WithLabelValues(Reason(ae)).Inc()
			}
			return nil, err
		}
		e.log.Debug("dial failed", "peer", p.id, "failures", failures, "err", err)
	}
}

// dial opens a connection to relayID at the address its service
// registers, and authenticates it (clientTLS).
func (e *Endpoint) dial(ctx context.Context, relayID string) (*quic.Conn, error) {
	svc, ok := e.cfg.Registry.Service(relayID)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownRelay, relayID)
	}
	addr, err := net.ResolveUDPAddr("udp", svc.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("resolve %s address %q: %w", relayID, svc.GetAddress(), err)
	}
	var verdict authResult
	ctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	defer cancel()
	stop := context.AfterFunc(e.ctx, cancel) // Close does not wait for a dial
	defer stop()
	conn, err := e.tr.Dial(ctx, addr, e.clientTLS(relayID, &verdict), e.dialConf)
	if err != nil {
		if aerr := verdict.get(); aerr != nil {
			return nil, aerr
		}
		if ae, ok := refusedByPeer(err, relayID); ok {
			return nil, ae
		}
		return nil, fmt.Errorf("dial %s at %s: %w", relayID, addr, err)
	}
	return conn, nil
}

// drop forgets conn (if it is still p's) and closes it.
func (p *peer) drop(conn *quic.Conn) {
	p.mu.Lock()
	if p.conn == conn {
		p.conn = nil
	}
	p.mu.Unlock()
	conn.CloseWithError(0, "")
}

// close closes p's connection for good.
func (p *peer) close() {
	p.mu.Lock()
	p.closed = true
	conn := p.conn
	p.conn = nil
	p.mu.Unlock()
	if conn != nil {
		conn.CloseWithError(connShutdown, "relay shutting down")
	}
}
