package mesh

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/check"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// serveConn accepts the streams of one authenticated peer, one batch per
// stream, until the peer goes or ctx ends; then it closes the connection.
// Stream goroutines join wg. The peer's connections count against
// MaxConnsPerPeer and its streams, over all of them, against
// MaxStreamsPerPeer (admit.go).
func (e *Endpoint) serveConn(ctx context.Context, conn *quic.Conn, wg *sync.WaitGroup) {
	peerID, err := peerRelayID(conn)
	if err != nil {
		// serverTLS authenticated the peer, so this is a broken invariant
		// of the handshake; refuse rather than guess.
		e.log.Error("accepted connection has no relay identity", "err", err)
		conn.CloseWithError(connShutdown, "no relay identity")
		return
	}
	p, ok := e.in.add(peerID, conn)
	if !ok {
		e.m.connsRefused.WithLabelValues("too_many_connections").Inc()
		e.log.Warn("refused a connection: the relay has its share open", "peer", peerID, "addr", conn.RemoteAddr().String(), "max", e.cfg.MaxConnsPerPeer)
		conn.CloseWithError(connTooMany, "too many connections")
		return
	}
	e.m.connsAccepted.Inc()
	e.m.inboundConns.Inc()
	defer func() {
		e.in.remove(peerID, conn)
		e.m.inboundConns.Dec()
	}()
	e.log.Debug("peer connected", "peer", peerID, "addr", conn.RemoteAddr().String())
	for {
		// A stream token before accepting: the peer's streams beyond its
		// share stay unaccepted, held by QUIC flow control.
		var str *quic.Stream
		err := p.takeStream(ctx, conn)
		if err == nil {
			if str, err = conn.AcceptStream(ctx); err != nil {
				<-p.streams
			}
		}
		if err != nil {
			e.log.Debug("peer connection ended", "peer", peerID, "err", err)
			// Close before returning, not in the background: once Run
			// returns, Close tears the transport down, which would drop
			// the CONNECTION_CLOSE that tells the peer to redial. (A no-op
			// when the peer closed it.)
			conn.CloseWithError(connShutdown, "relay shutting down")
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-p.streams }()
			e.serveStream(ctx, peerID, str)
		}()
	}
}

// serveStream handles one exchange: it reads the peer's batch frame and
// answers with a receipt frame, or an error frame saying why not.
func (e *Endpoint) serveStream(ctx context.Context, peerID string, str *quic.Stream) {
	str.SetReadDeadline(time.Now().Add(e.cfg.FrameReadTimeout))
	br := bufio.NewReaderSize(str, 16<<10)
	f, _, err := e.codec.readFrame(br, false)
	if err == nil && f.Kind != amdp.FrameBatch {
		err = fmt.Errorf("%w: a %s frame where a batch belongs", ErrBadFrameOrder, f.Kind)
	}
	if err == nil {
		err = expectEOF(br)
	}
	if err != nil {
		if isStreamError(err) {
			// The peer reset the stream, the connection went, or the
			// batch took too long: nobody to answer.
			code := streamCanceled
			if errors.Is(err, os.ErrDeadlineExceeded) {
				code = streamTimeout
				e.slowPeer(peerID)
			}
			e.log.Debug("stream failed before its batch was read", "peer", peerID, "err", err)
			str.CancelRead(code)
			str.CancelWrite(code)
			return
		}
		e.m.batchesReceived.Inc()
		str.CancelRead(streamRejected) // whatever else the peer sends is not read
		e.reject(str, peerID, f.Batch, err)
		return
	}
	// A processing slot once the batch is in: waiting for one holds only
	// this peer's stream quota, and slots go to waiting peers in turn.
	release, err := e.slots.acquire(ctx, peerID)
	if err != nil {
		str.CancelRead(streamShutdown)
		str.CancelWrite(streamShutdown)
		return
	}
	defer release()
	e.m.batchesReceived.Inc()

	rb, err := e.receive(ctx, peerID, f.Batch)
	if err != nil {
		var t *transient
		switch {
		case errors.As(err, &t) && ctx.Err() != nil:
			// Shutting down: reset rather than answer, so that the sender
			// treats it as a lost connection and resends to this relay's
			// next incarnation without troubling its caller.
			e.m.failures.WithLabelValues(Reason(ErrClosed)).Inc()
			e.log.Debug("shutting down mid-batch", "peer", peerID, "batch_seq", f.Batch.GetHeader().GetBatchSeq(), "err", err)
			str.CancelWrite(streamShutdown)
		case errors.As(err, &t):
			e.fail(str, peerID, f.Batch, t.err)
		default:
			e.reject(str, peerID, f.Batch, err)
		}
		return
	}
	bp := e.codec.bufs.get(0)
	defer e.codec.bufs.put(bp)
	out, err := amdp.EncodeReceiptFrame((*bp)[:0], rb, e.codec.enc)
	if err != nil {
		e.fail(str, peerID, f.Batch, err)
		return
	}
	*bp = out
	e.reply(str, out)
}

// slowPeer counts a peer whose batch frame did not arrive within
// FrameReadTimeout, and reports it: a slow-loris peer is an offender.
func (e *Endpoint) slowPeer(peerID string) {
	e.m.rejected.WithLabelValues(reasonSlowPeer).Inc()
	if e.cfg.Offences != nil {
		e.cfg.Offences.Report(offence.Record{
			TimeUnixMs: time.Now().UnixMilli(), Reporter: e.cfg.RelayID, Stage: offence.StageReceiver,
			Reason: reasonSlowPeer, Org: offence.Unknown, Relay: peerID,
			Detail: fmt.Sprintf("no complete batch frame within %v", e.cfg.FrameReadTimeout),
		})
	}
}

// orgOf is the org of a registered relay, or "" (offence.Unknown).
func (e *Endpoint) orgOf(relayID string) string {
	if svc, ok := e.cfg.Registry.Service(relayID); ok {
		return svc.GetOrg()
	}
	return ""
}

// handshakeRefused reports a refused handshake: the relay is the one its
// certificate claims, not proven (the certificate did not authenticate).
func (e *Endpoint) handshakeRefused(err error) {
	if e.cfg.Offences == nil {
		return
	}
	claimed := ""
	var ae *AuthError
	if errors.As(err, &ae) {
		claimed = ae.Relay
	}
	r := offence.ForRelay(offence.StageReceiver, Reason(err), claimed, e.orgOf(claimed), err.Error())
	r.Reporter, r.TimeUnixMs = e.cfg.RelayID, time.Now().UnixMilli()
	e.cfg.Offences.Report(r)
}

// reasonSlowPeer labels a stream reset because its frame came too slowly.
const reasonSlowPeer = "slow_peer"

// reject answers a batch that is refused as a whole; the sender must not
// resend it unchanged. Counted by reason, logged, and reported as an
// offence of the authenticated peer.
func (e *Endpoint) reject(str *quic.Stream, peerID string, b *amdp.Batch, err error) {
	reason := Reason(err)
	e.m.rejected.WithLabelValues(reason).Inc()
	if e.cfg.Offences != nil {
		r := offence.ForRelay(offence.StageReceiver, reason, peerID, e.orgOf(peerID),
			fmt.Sprintf("batch %d refused: %v", b.GetHeader().GetBatchSeq(), err))
		r.Reporter, r.TimeUnixMs = e.cfg.RelayID, time.Now().UnixMilli()
		if h := b.GetHeader(); h != nil {
			// Evidence: the header and the relay's signature over it, not
			// the packets (bounded, and a refused batch may be huge). Not
			// Proven: a whole batch can be refused before its signature
			// is checked, and the channel's authentication is not
			// something a third party can check afterwards.
			ev, merr := amdp.EncodeBatch(nil, &amdp.Batch{Header: h, RelaySignature: b.GetRelaySignature()})
			if merr == nil && len(ev) <= offence.MaxEvidence {
				r.Evidence = ev
			}
		}
		e.cfg.Offences.Report(r)
	}
	e.log.Warn("rejected a batch", "peer", peerID, "batch_seq", b.GetHeader().GetBatchSeq(), "reason", reason, "err", err)
	e.reply(str, appendErrorFrame(nil, classRejected, reason, err.Error()))
}

// fail answers a batch that this relay could not process now; the sender
// should resend it.
func (e *Endpoint) fail(str *quic.Stream, peerID string, b *amdp.Batch, err error) {
	reason := Reason(err)
	e.m.failures.WithLabelValues(reason).Inc()
	e.log.Warn("could not process a batch; the sender will retry", "peer", peerID, "batch_seq", b.GetHeader().GetBatchSeq(), "reason", reason, "err", err)
	e.reply(str, appendErrorFrame(nil, classRetry, reason, err.Error()))
}

func (e *Endpoint) reply(str *quic.Stream, frame []byte) {
	str.SetWriteDeadline(time.Now().Add(e.cfg.StreamTimeout))
	if _, err := str.Write(frame); err != nil {
		e.log.Debug("could not answer", "err", err)
		str.CancelWrite(streamCanceled)
		return
	}
	str.Close()
}

// transient marks a failure of this relay rather than of the batch: the
// sender gets an error frame of class retry.
type transient struct{ err error }

func (t *transient) Error() string { return t.err.Error() }
func (t *transient) Unwrap() error { return t.err }

// receive checks a batch from peerID, delivers its acceptable packets
// exactly once and returns the signed receipts. A batch-level failure is
// returned as is; a failure of this relay is a *transient.
func (e *Endpoint) receive(ctx context.Context, peerID string, b *amdp.Batch) (*amdp.ReceiptBatch, error) {
	h := b.Header
	switch {
	case h.ToRelay != e.cfg.RelayID:
		return nil, fmt.Errorf("%w: to_relay is %q, this is %q", ErrWrongToRelay, h.ToRelay, e.cfg.RelayID)
	case h.FromRelay != peerID:
		return nil, fmt.Errorf("%w: from_relay is %q, the connection is %q's", ErrWrongFromRelay, h.FromRelay, peerID)
	}
	suite, pub, err := e.relayKey(peerID)
	if err != nil {
		return nil, err
	}
	if err := amdp.VerifyBatch(b, suite, pub, e.cfg.Limits); err != nil {
		return nil, err
	}
	if err := e.checkAnchor(ctx, b); err != nil {
		return nil, err
	}

	verdicts := e.checkPackets(peerID, b.Packets)
	rh := &amdp.ReceiptBatchHeader{FromRelay: e.cfg.RelayID, ToRelay: peerID, BatchSeq: h.BatchSeq}
	// With a hook, the receipt batch is recorded as owed to it together
	// with the receipts, before the sender gets them: the sender will not
	// resend a receipted batch, so this record is what still tells the
	// hook (the relay's receipt anchor) after a stop or a crash.
	var owe func([]*amdp.Receipt) *owed
	if e.cfg.OnReceipts != nil {
		owe = func(rs []*amdp.Receipt) *owed { return newOwed(b, rh, rs) }
	}
	receipts, err := e.deliver(ctx, b.Packets, verdicts, owe)
	if err != nil {
		return nil, &transient{err}
	}
	rb := &amdp.ReceiptBatch{Header: rh, Receipts: receipts}
	if err := amdp.SealReceiptBatch(rb, e.cfg.Signer); err != nil {
		return nil, &transient{err}
	}
	if e.cfg.OnReceipts != nil {
		e.cfg.OnReceipts(b, rb)
	}
	return rb, nil
}

// checkAnchor holds back a batch that carries packets of a strict pipe
// until the source relay's open-batch anchor is committed with the batch's
// root and count: a missing anchor is transient (the sender retries), a
// different one refuses the batch.
func (e *Endpoint) checkAnchor(ctx context.Context, b *amdp.Batch) error {
	strict := false
	for _, p := range b.Packets {
		if pipe, ok := e.cfg.Registry.Pipe(p.PipeId); ok && pipe.GetMode() == govchain.ConsistencyMode_MODE_STRICT {
			strict = true
			break
		}
	}
	if !strict {
		return nil
	}
	h := b.Header
	if e.cfg.Anchors == nil {
		return fmt.Errorf("%w: batch %d carries strict-pipe packets and this relay has no anchor view", ErrNotAnchored, h.BatchSeq)
	}
	a, found, err := e.cfg.Anchors.BatchAnchor(ctx, h.FromRelay, h.BatchSeq)
	switch {
	case err != nil:
		return &transient{fmt.Errorf("%w: batch %d: %v", ErrNotAnchored, h.BatchSeq, err)}
	case !found:
		e.m.rejected.WithLabelValues("not_anchored_yet").Inc()
		return &transient{fmt.Errorf("%w: batch %d of strict pipes is not anchored yet", ErrNotAnchored, h.BatchSeq)}
	case !bytes.Equal(a.MerkleRoot, h.MerkleRoot) || a.Count != h.PacketCount || a.ToRelay != h.ToRelay:
		return fmt.Errorf("%w: batch %d differs from its anchor", ErrAnchorMismatch, h.BatchSeq)
	}
	return nil
}

// checkPackets returns, for each packet, why it must not be delivered (nil
// when it may be), with package check's rules, the router's too: that it
// is authentic (its pipe is registered and runs from peerID to this
// relay, its credential and signature are the pipe source's), then that
// its pipe takes it now. A packet that is not authentic is reported as an
// offence against the org and relay it claims to come from.
func (e *Endpoint) checkPackets(peerID string, packets []*amdp.Packet) []error {
	items := make([]check.Item, len(packets))
	ends := check.Ends{From: peerID, To: e.cfg.RelayID}
	for i, p := range packets {
		pipe, ok := e.cfg.Registry.Pipe(p.PipeId)
		items[i] = check.Item{Packet: p, Pipe: pipe, Err: check.Authentic(p, pipe, ok, ends, e.cfg.Registry)}
	}
	check.Signatures(items, nil)
	verdicts := make([]error, len(packets))
	rejected, first := 0, error(nil)
	for i := range items {
		it := &items[i]
		err := it.Err
		if err == nil {
			err = check.Admissible(it.Packet, it.Pipe, e.cfg.Limits.MaxPayload)
		} else if e.cfg.Offences != nil {
			// The packet came in a batch peerID signed. A signature that
			// does not verify under the key its credential names is the
			// peer's fault whatever the timing (its stage 1 had to drop
			// it): proven. The other failures depend on the registry's
			// view, which can change while a batch is in flight (a key
			// rotated, a pipe moved, an account revoked): claimed.
			r := offence.ForPacket(offence.StageReceiver, Reason(err), it.Packet, it.Pipe, nil, err.Error())
			r.Reporter, r.TimeUnixMs = e.cfg.RelayID, time.Now().UnixMilli()
			r.Proven = errors.Is(err, amdp.ErrBadSignature)
			r.Relay, r.Org = peerID, e.orgOf(peerID)
			e.cfg.Offences.Report(r)
		}
		if verdicts[i] = err; err != nil {
			e.m.rejected.WithLabelValues(Reason(err)).Inc()
			if rejected++; first == nil {
				first = err
			}
		}
	}
	if rejected > 0 {
		e.log.Warn("rejected packets", "peer", peerID, "rejected", rejected, "of", len(packets), "first_reason", Reason(first), "first_err", first)
	}
	return verdicts
}

// deliver returns a receipt for every packet: REJECTED for those with a
// verdict, and for the others their final receipt, delivering each at
// most once (DESIGN §5):
//
//  1. a packet with a receipt in the store was handled before: reuse it;
//  2. a packet with an in-flight marker may have landed before a crash or
//     a failed Deliver: ask the chain (FindDelivery) and reuse what it has;
//  3. the rest are marked in flight (one synced batch), delivered in one
//     Deliver call, and their receipts stored with the markers cleared
//     (one synced batch).
//
// The packets are claimed in memory for the duration, so that a resent
// batch arriving while the first copy is being delivered waits and then
// finds the receipts. Any error leaves the markers, so the retry is safe.
//
// When owe is not nil, the record it makes of the receipts is stored in
// the same synced batch as they are, also when nothing new is stored (a
// batch answered from the record, or refused whole by its verdicts): its
// receipts may never have been anchored.
func (e *Endpoint) deliver(ctx context.Context, packets []*amdp.Packet, verdicts []error, owe func([]*amdp.Receipt) *owed) ([]*amdp.Receipt, error) {
	receipts := make([]*amdp.Receipt, len(packets))
	idx := make([]int, 0, len(packets))
	ids := make([][32]byte, 0, len(packets))
	for i, p := range packets {
		id := p.ID()
		if verdicts[i] != nil {
			receipts[i] = e.rejectedReceipt(id, verdicts[i])
			continue
		}
		idx = append(idx, i)
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		if owe != nil {
			if err := e.store.commit(nil, owe(receipts)); err != nil {
				return nil, err
			}
		}
		return receipts, nil
	}
	release, err := e.claims.acquire(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	defer release()

	stored, marked, err := e.store.Lookup(ids)
	if err != nil {
		return nil, err
	}
	var final []*amdp.Receipt // to store
	var todo []int            // positions in ids to deliver
	dups := 0
	for j, id := range ids {
		if r := stored[j]; r != nil {
			receipts[idx[j]] = r
			dups++
			continue
		}
		if marked[j] {
			d, found, err := e.cfg.Deliverer.FindDelivery(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("%w: find delivery of %x: %w", ErrDeliver, id, err)
			}
			if found {
				r, err := e.receiptOf(id, d)
				if err != nil {
					return nil, err
				}
				receipts[idx[j]] = r
				final = append(final, r)
				dups++
				continue
			}
		}
		todo = append(todo, j)
	}
	if len(todo) > 0 {
		todoIDs := make([][32]byte, len(todo))
		todoPackets := make([]*amdp.Packet, len(todo))
		for k, j := range todo {
			todoIDs[k], todoPackets[k] = ids[j], packets[idx[j]]
		}
		if err := e.store.MarkInFlight(todoIDs); err != nil {
			return nil, err
		}
		ds, err := e.cfg.Deliverer.Deliver(ctx, todoPackets)
		if err != nil {
			return nil, fmt.Errorf("%w: %d packets: %w", ErrDeliver, len(todoPackets), err)
		}
		if len(ds) != len(todoPackets) {
			return nil, fmt.Errorf("%w: deliverer returned %d deliveries for %d packets", ErrDeliver, len(ds), len(todoPackets))
		}
		for k, j := range todo {
			r, err := e.receiptOf(ids[j], ds[k])
			if err != nil {
				return nil, err
			}
			receipts[idx[j]] = r
			final = append(final, r)
		}
	}
	var o *owed
	if owe != nil {
		o = owe(receipts)
	}
	if err := e.store.commit(final, o); err != nil {
		return nil, err
	}
	e.m.packetsDelivered.Add(float64(len(todo)))
	e.m.duplicates.Add(float64(dups))
	return receipts, nil
}

// receiptOf turns the chain's record of a delivery into a receipt, and
// refuses one that is not about packet id or would not validate: the
// batch then fails (transiently) rather than carry a bad receipt.
func (e *Endpoint) receiptOf(id [32]byte, d subchain.Delivery) (*amdp.Receipt, error) {
	if d.PacketID != id {
		return nil, fmt.Errorf("%w: delivery for packet %x reports packet %x", ErrDeliver, id, d.PacketID)
	}
	r := &amdp.Receipt{
		PacketId:   id[:],
		Status:     d.Status,
		DestTxHash: d.TxHash,
		DestHeight: d.Height,
		Reason:     truncateUTF8(d.Reason, e.cfg.Limits.MaxReasonLen),
	}
	if d.ResultHash != ([32]byte{}) || d.Status == amdp.StatusDelivered {
		rh := d.ResultHash
		r.ResultHash = rh[:]
	}
	if err := r.Validate(e.cfg.Limits); err != nil {
		return nil, fmt.Errorf("%w: delivery of %x: %w", ErrDeliver, id, err)
	}
	return r, nil
}

// rejectedReceipt is the receipt of a packet refused before delivery. Its
// reason starts with the stable label, then says why. It is not stored: a
// refusal by the registry (an inactive pipe) may not be final, and
// nothing happened on the chain.
func (e *Endpoint) rejectedReceipt(id [32]byte, err error) *amdp.Receipt {
	return &amdp.Receipt{
		PacketId: id[:],
		Status:   amdp.StatusRejected,
		Reason:   truncateUTF8(Reason(err)+": "+err.Error(), e.cfg.Limits.MaxReasonLen),
	}
}

// claims makes one goroutine at a time process a packet id.
type claims struct {
	mu   sync.Mutex                 // guards held
	held map[[32]byte]chan struct{} // closed when the holder releases
}

// acquire claims all ids at once, waiting while any is held by another
// goroutine. Claiming all or none, never holding some while waiting for
// others, cannot deadlock.
func (c *claims) acquire(ctx context.Context, ids [][32]byte) (release func(), err error) {
	for {
		c.mu.Lock()
		var busy chan struct{}
		for _, id := range ids {
			if ch, ok := c.held[id]; ok {
				busy = ch
				break
			}
		}
		if busy == nil {
			done := make(chan struct{})
			for _, id := range ids {
				c.held[id] = done
			}
			c.mu.Unlock()
			return func() {
				c.mu.Lock()
				for _, id := range ids {
					delete(c.held, id)
				}
				c.mu.Unlock()
				close(done)
			}, nil
		}
		c.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}
