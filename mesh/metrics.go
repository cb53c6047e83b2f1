package mesh

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one endpoint's Prometheus collectors. They exist whether or
// not a registerer was given, so that the code counts unconditionally; they
// carry a relay label so that several endpoints (a test, a demo) can share
// one registry.
type metrics struct {
	batchesSent      prometheus.Counter
	batchesReceived  prometheus.Counter
	packetsDelivered prometheus.Counter
	duplicates       prometheus.Counter
	rejected         *prometheus.CounterVec
	failures         *prometheus.CounterVec
	sendErrors       *prometheus.CounterVec
	sendSeconds      prometheus.Histogram

	connsAccepted   prometheus.Counter
	connsRefused    *prometheus.CounterVec
	connsRevoked    prometheus.Counter
	addrValidations prometheus.Counter
	inboundConns    prometheus.Gauge

	reg prometheus.Registerer // nil when not registered
	all []prometheus.Collector
}

func newMetrics(relayID string, reg prometheus.Registerer) (*metrics, error) {
	cl := prometheus.Labels{"relay": relayID}
	m := &metrics{
		batchesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccgp_mesh_batches_sent_total", ConstLabels: cl,
			Help: "Batches a peer acknowledged with receipts that verified.",
		}),
		batchesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccgp_mesh_batches_received_total", ConstLabels: cl,
			Help: "Batch frames received from peers, accepted or not.",
		}),
		packetsDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccgp_mesh_packets_delivered_total", ConstLabels: cl,
			Help: "Packets handed to the destination chain and executed by it (delivered or rejected by the contract).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccgp_mesh_duplicates_suppressed_total", ConstLabels: cl,
			Help: "Packets received again and answered from the delivery record or the chain, not delivered twice.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccgp_mesh_rejected_total", ConstLabels: cl,
			Help: "Rejected handshakes, batches and packets, by reason.",
		}, []string{"reason"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccgp_mesh_receive_failures_total", ConstLabels: cl,
			Help: "Received batches not acknowledged because this relay failed (delivery, store, shutdown), by reason.",
		}, []string{"reason"}),
		sendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccgp_mesh_send_errors_total", ConstLabels: cl,
			Help: "Sends that returned an error, by reason.",
		}, []string{"reason"}),
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ccgp_mesh_send_seconds", ConstLabels: cl,
			Help:    "Time from Send to verified receipts, including waits for in-flight slots and reconnects.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms .. 16 s
		}),
		connsAccepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccgp_mesh_connections_accepted_total", ConstLabels: cl,
			Help: "Inbound connections that passed admission, the handshake and the per-peer cap.",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ccgp_mesh_connections_refused_total", ConstLabels: cl,
			Help: "Inbound connections refused, by reason: conn_rate and admission_full before the handshake, too_many_connections after it.",
		}, []string{"reason"}),
		connsRevoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccgp_mesh_connections_revoked_total", ConstLabels: cl,
			Help: "Connections closed because their peer no longer authenticates against the registry (revoked, expelled, certificate changed).",
		}),
		addrValidations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ccgp_mesh_address_validations_total", ConstLabels: cl,
			Help: "Connection attempts that proved their source address with a QUIC Retry (or a resumption token).",
		}),
		inboundConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ccgp_mesh_inbound_connections", ConstLabels: cl,
			Help: "Inbound connections open now.",
		}),
	}
	m.all = []prometheus.Collector{m.batchesSent, m.batchesReceived, m.packetsDelivered, m.duplicates,
		m.rejected, m.failures, m.sendErrors, m.sendSeconds,
		m.connsAccepted, m.connsRefused, m.connsRevoked, m.addrValidations, m.inboundConns}
	if reg == nil {
		return m, nil
	}
	for i, c := range m.all {
		if err := reg.Register(c); err != nil {
			for _, r := range m.all[:i] {
				reg.Unregister(r)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("mesh: metrics of relay %s already registered (is another endpoint open?): %w", relayID, err)
			}
			return nil, fmt.Errorf("mesh: register metrics: %w", err)
		}
	}
	m.reg = reg
	return m, nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.all {
		m.reg.Unregister(c)
	}
	m.reg = nil
}
