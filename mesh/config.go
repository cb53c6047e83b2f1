package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// ALPN is the application protocol that relays negotiate in TLS: both
// sides refuse a connection that does not speak it.
const ALPN = "ccgp-amdp/1"

// Registry is the governance view the mesh needs: services (relay id →
// QUIC address, TLS fingerprint, signing account), accounts (address →
// suite and public key) and pipes. The relay implements it with a cache
// that govchain keeps current. Lookups are on the hot path (one Pipe per
// packet, a Service and an Account per batch and per handshake), so they
// must be cheap and must not block on the network. Returned records are
// read, never modified, by the mesh. Implementations must be safe for
// concurrent use.
type Registry interface {
	Service(relayID string) (*govchain.Service, bool)
	Account(addr crypto.Address) (*govchain.Account, bool)
	Pipe(id string) (*govchain.Pipe, bool)
	Revoked(addr crypto.Address) bool
}

// Deliverer is the destination chain as delivery needs it; subchain.Chain
// satisfies it. The mesh calls Deliver at most once at a time for any one
// packet, with packets it has verified and recorded as in flight, and
// FindDelivery for packets whose delivery may have happened before a crash
// or a failed Deliver. Implementations must be safe for concurrent use.
type Deliverer interface {
	// Deliver executes packets in order and returns one Delivery per
	// packet, in the same order. An error means nothing is known about
	// any of them: the mesh does not acknowledge the batch and asks
	// FindDelivery when the sender retries it.
	Deliver(ctx context.Context, packets []*amdp.Packet) ([]subchain.Delivery, error)
	// FindDelivery reports whether the chain already executed the packet
	// and with what outcome. Once Deliver has returned (with or without
	// an error), its answer must be final for that packet.
	FindDelivery(ctx context.Context, packetID [32]byte) (subchain.Delivery, bool, error)
}

// Config configures an Endpoint. Zero values take the defaults noted; New
// validates the rest.
type Config struct {
	// RelayID is this relay's id, as registered on govchain and named by
	// Certificate. Required.
	RelayID string
	// ListenAddr is the UDP address the endpoint binds, for receiving and
	// for dialling out: "127.0.0.1:0" picks a free loopback port, which
	// Addr then reports. Default ":0".
	ListenAddr string
	// Certificate is this relay's TLS certificate, issued by the CA for
	// RelayID (crypto.CA.Issue). Required.
	Certificate tls.Certificate
	// CAs are the CAs whose certificates peers must present. Required.
	CAs *x509.CertPool
	// Signer is the relay's key for signing receipt batches; it must be
	// the key of the account the relay's service registers. Required when
	// Deliverer is set.
	Signer crypto.Signer
	// Registry is the governance view. Required.
	Registry Registry
	// Deliverer is the destination chain. Nil makes a send-only endpoint
	// that accepts no connections.
	Deliverer Deliverer
	// DedupeDir is the directory of the delivery record (a pebble store).
	// Required when Deliverer is set.
	DedupeDir string
	// Limits bound what peers can make the endpoint accept; zero fields
	// take amdp's defaults.
	Limits amdp.Limits
	// Logger receives the endpoint's logs. Default: discard.
	Logger *slog.Logger
	// Metrics, when set, registers the endpoint's Prometheus metrics
	// (labelled relay=RelayID); Close unregisters them.
	Metrics prometheus.Registerer

	// MaxInFlight bounds the Sends in flight to one peer: one more blocks
	// until one returns. Default 32.
	MaxInFlight int
	// MaxConcurrentBatches bounds the received batches processed at once,
	// over all peers; others wait, read, for a slot. Default 32.
	MaxConcurrentBatches int
	// MaxBatchesPerPeer bounds the processing slots one peer relay may
	// hold; slots are granted to waiting peers in turn. Default half of
	// MaxConcurrentBatches.
	MaxBatchesPerPeer int
	// MaxStreamsPerPeer bounds the streams of one peer relay served at
	// once, over all its connections, being read or processed; QUIC flow
	// control holds the rest at the sender. Default 2 × MaxBatchesPerPeer.
	MaxStreamsPerPeer int
	// MaxConnsPerPeer bounds the inbound connections of one relay; one
	// more is closed after its handshake. Default 2 (one, and one redial
	// while the broken one times out).
	MaxConnsPerPeer int
	// ConnRate and ConnBurst bound new inbound connections per source IP
	// address (a token bucket): past half the burst an address must answer
	// a QUIC Retry, past all of it the attempt is refused before the TLS
	// handshake. Defaults 10 per second, burst 20.
	ConnRate  float64
	ConnBurst int
	// FrameReadTimeout bounds how long a peer may take to send a batch
	// frame once its stream is accepted; a slower one is reset and counted
	// as slow_peer. Default 10 s.
	FrameReadTimeout time.Duration
	// RevalidateInterval is how often every connection is authenticated
	// again against the registry (Revalidate). Default 1 s.
	RevalidateInterval time.Duration
	// DialTimeout bounds one connection attempt (the QUIC and TLS
	// handshake). Default 5 s.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between connection attempts
	// to a peer that fails: it doubles from MinBackoff up to MaxBackoff,
	// with jitter. Defaults 50 ms and 5 s.
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout closes a connection that hears nothing for this long;
	// dialled connections send keep-alives at a third of it. Default 30 s.
	IdleTimeout time.Duration
	// StreamTimeout bounds how long a receiving stream's peer may take to
	// take the reply. Default 30 s.
	StreamTimeout time.Duration
	// Anchors looks up the governance chain's open-batch anchors: a batch
	// carrying packets of a strict pipe is delivered only once its anchor is
	// committed with the batch's Merkle root and count (DESIGN §5). Nil
	// refuses strict packets.
	Anchors AnchorView
	// OnReceipts, if set, is told of every receipt batch this endpoint
	// signs, after the receipts are stored (the relay anchors them on the
	// governance chain), until it acknowledges the batch with
	// Endpoint.Anchored. The store records each batch as owed with its
	// receipts, before the sender gets them, and Run tells the hook again
	// at start of every batch still owed, so a stop or a crash between the
	// reply and the anchor loses none; a batch may be told more than once
	// (a resend, a replay). A replayed b carries only its header's relays
	// and sequence and its packets' pipe ids and sequences. It must not
	// block for long.
	OnReceipts func(b *amdp.Batch, rb *amdp.ReceiptBatch)
	// Offences, if set, takes a record of every received packet that is
	// not authentic (package check), attributed to the org and relay it
	// claims to come from. It must not block.
	Offences offence.Reporter
}

// AnchorView reads open-batch anchors; found is false while the anchor is
// not committed yet.
type AnchorView interface {
	BatchAnchor(ctx context.Context, fromRelay string, batchSeq uint64) (a *govchain.BatchAnchor, found bool, err error)
}

// withDefaults fills the zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	req := func(ok bool, what string) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s is required", what))
		}
	}
	req(c.RelayID != "", "RelayID")
	req(len(c.Certificate.Certificate) > 0 && c.Certificate.PrivateKey != nil, "Certificate")
	req(c.CAs != nil, "CAs")
	req(c.Registry != nil, "Registry")
	if c.Deliverer != nil {
		req(c.Signer != nil, "Signer (with a Deliverer)")
		req(c.DedupeDir != "", "DedupeDir (with a Deliverer)")
	}
	if len(c.Certificate.Certificate) > 0 {
		leaf := c.Certificate.Leaf
		if leaf == nil {
			var err error
			if leaf, err = x509.ParseCertificate(c.Certificate.Certificate[0]); err != nil {
				errs = append(errs, fmt.Errorf("certificate: %w", err))
			}
		}
		if leaf != nil {
			if id, err := crypto.RelayID(leaf); err != nil {
				errs = append(errs, fmt.Errorf("certificate: %w", err))
			} else if c.RelayID != "" && id != c.RelayID {
				errs = append(errs, fmt.Errorf("the certificate names relay %q, not RelayID %q", id, c.RelayID))
			}
		}
	}
	for _, d := range []struct {
		v    time.Duration
		name string
	}{{c.DialTimeout, "DialTimeout"}, {c.MinBackoff, "MinBackoff"}, {c.MaxBackoff, "MaxBackoff"}, {c.IdleTimeout, "IdleTimeout"}, {c.StreamTimeout, "StreamTimeout"},
		{c.FrameReadTimeout, "FrameReadTimeout"}, {c.RevalidateInterval, "RevalidateInterval"}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s is negative", d.name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("mesh: config: %w", err)
	}

	def := func(v *int, dv int) {
		if *v <= 0 {
			*v = dv
		}
	}
	defd := func(v *time.Duration, dv time.Duration) {
		if *v == 0 {
			*v = dv
		}
	}
	if c.ListenAddr == "" {
		c.ListenAddr = ":0"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	def(&c.MaxInFlight, 32)
	def(&c.MaxConcurrentBatches, 32)
	def(&c.MaxBatchesPerPeer, max(c.MaxConcurrentBatches/2, 1))
	c.MaxBatchesPerPeer = min(c.MaxBatchesPerPeer, c.MaxConcurrentBatches)
	def(&c.MaxStreamsPerPeer, 2*c.MaxBatchesPerPeer)
	def(&c.MaxConnsPerPeer, 2)
	def(&c.ConnBurst, 20)
	if c.ConnRate <= 0 {
		c.ConnRate = 10
	}
	defd(&c.FrameReadTimeout, 10*time.Second)
	defd(&c.RevalidateInterval, time.Second)
	defd(&c.DialTimeout, 5*time.Second)
	defd(&c.MinBackoff, 50*time.Millisecond)
	defd(&c.MaxBackoff, 5*time.Second)
	defd(&c.IdleTimeout, 30*time.Second)
	defd(&c.StreamTimeout, 30*time.Second)
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	c.Limits = effectiveLimits(c.Limits)
	return c, nil
}

// effectiveLimits fills the zero fields of l from amdp's defaults, so that
// the mesh's own checks (the per-pipe payload bound, receipt reasons) use
// the same numbers as amdp's.
func effectiveLimits(l amdp.Limits) amdp.Limits { return l.WithDefaults() }
