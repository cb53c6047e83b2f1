// Package mesh moves AMDP batches between relays over QUIC and delivers
// them on the receiving side, exactly once.
//
// It owns a relay's QUIC endpoint (one UDP socket, both directions), the
// mutual TLS between relays, the per-peer connections with their
// reconnects and in-flight limits, the framing of batches and answers on
// streams, the receiving relay's checks, its delivery record (DedupeStore)
// and the signed receipts it sends back. It does not resolve pipes (the
// router does) or build batches; what the message bytes mean is package
// amdp's.
//
// # Identity
//
// Every connection is TLS 1.3 with certificates on both sides and ALPN
// "ccgp-amdp/1". A relay's certificate names its relay id in a
// ccgp://relay/<id> URI SAN (crypto.CA.Issue). After the chain is checked
// against the configured CAs, each side looks the peer's relay id up in the
// Registry: it must have a service, and when that service registers a
// certificate fingerprint (SHA-256 of the leaf DER), it must be this
// certificate's. The dialler also requires the certificate to name the
// relay it dialled. A refused handshake is an AuthError on the side that
// refused and on the side refused (ErrAuthRefused), and is counted in
// ccgp_mesh_rejected_total.
//
// # Wire protocol
//
// The relay that has a batch dials the destination relay (one connection
// per peer, kept open, with keep-alives) and opens one bidirectional stream
// per batch. On each stream:
//
//	sender → receiver   one amdp batch frame (amdp.EncodeFrame: kind 1,
//	                    zstd-compressed protobuf), then FIN
//	receiver → sender   one answer, then FIN: either
//	                    - an amdp receipt frame (kind 2) holding the
//	                      ReceiptBatch signed by the receiver
//	                      (SealReceiptBatch), with one receipt per packet;
//	                    - or an error frame.
//
// The error frame has the amdp frame header's layout with kind 0x80,
// which amdp never uses, and a body of at most 1024 bytes:
//
//	0x80 | flags 0 | uvarint length | class | uvarint(len reason) | reason | detail
//
// class 1 (rejected): the batch is refused as a whole and resending it
// unchanged fails again: a malformed or oversized frame, a bad relay
// signature or Merkle root, to_relay not the receiver, from_relay not the
// TLS peer, the sender's account unknown. class 2 (retry): the receiver
// failed (its Deliverer, its store, a shutdown); the sender should resend
// the same batch later. reason is the stable label of Reason, as counted
// by the receiver's metrics; detail is for people. Send returns either as
// a RemoteError (matching ErrBatchRejected or ErrPeerFailed).
//
// A packet that fails its own checks (unknown, inactive or misrouted
// pipe, payload over the pipe's limit, bad app signature) does not fail
// the batch: its receipt is REJECTED with the reason label and message,
// and it is never delivered.
//
// Streams are reset (QUIC stream error codes) only when nobody can be
// answered, or in the direction that no longer matters: 0x1 the sender
// gave up (its ctx ended); 0x2 the receiver stops reading a frame it
// rejects (STOP_SENDING; its error frame still comes back on the other
// direction); 0x3 the receiver is shutting down mid-batch, so the sender
// resends to its next incarnation; 0x4 the batch took longer than
// StreamTimeout to arrive. A relay that shuts down closes its connections with
// application error 0x1. The sender treats resets and lost connections
// as transport failures: it redials with backoff and resends the batch.
//
// # Exactly once
//
// Transport is at least once: Send resends a batch until it has verified
// receipts, and the router resends what was never acknowledged. Delivery
// is idempotent (DESIGN §5): the receiver keeps, per packet id, the final
// receipt (reused for every later copy) and, while a delivery is in
// progress, an in-flight marker, both written in synced pebble batches. A
// marker without a receipt means delivery may have happened before a
// crash or a failed Deliver, so the chain is asked (FindDelivery) before
// anything is delivered again. Within one process, one packet is
// processed by one goroutine at a time, so a resent copy that overtakes
// the original waits for it. This is exactly once provided that the
// Deliverer's FindDelivery is final once Deliver has returned: a chain
// that may still execute a transaction after Deliver failed must make the
// transaction itself idempotent by packet id.
//
// # Restarts
//
// A receiving endpoint keeps its QUIC stateless reset key in its dedupe
// store, so that after a restart at the same address (even after a crash
// that sent no CONNECTION_CLOSE) it resets its peers' stale connections
// on their first packet, and they redial at once instead of waiting out
// the idle timeout.
//
// # Flow control
//
// At most MaxInFlight Sends per peer are in flight: the next blocks (a
// slow peer slows its senders instead of growing a queue). The receiver
// processes at most MaxConcurrentBatches batches at once, at most
// MaxBatchesPerPeer of one peer, granted to waiting peers in turn; a peer
// may have MaxStreamsPerPeer streams served over at most MaxConnsPerPeer
// connections, and must bring each batch frame within FrameReadTimeout.
// New connections are rate-limited per source address, with a QUIC Retry
// first for an address that opens many. Revalidate closes connections
// whose peer no longer authenticates. admit.go says why each bound is
// where it is. Every blocking call takes a ctx and returns when it ends.
package mesh
