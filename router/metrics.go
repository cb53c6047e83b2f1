package router

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	routed      prometheus.Counter
	batches     prometheus.Counter
	sendErrors  prometheus.Counter
	rejected    *prometheus.CounterVec
	batchSize   prometheus.Histogram
	sendSeconds prometheus.Histogram
	inflight    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		routed:     prometheus.NewCounter(prometheus.CounterOpts{Name: "ccgp_router_packets_routed_total", Help: "Packets acknowledged by their destination relay."}),
		batches:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ccgp_router_batches_total", Help: "Batches acknowledged."}),
		sendErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "ccgp_router_send_errors_total", Help: "Batch sends that failed and were retried."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ccgp_router_rejected_total", Help: "Packets rejected at stage 1, by reason."},
			[]string{"reason"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ccgp_router_batch_packets", Help: "Packets per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13)}),
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ccgp_router_send_seconds", Help: "Batch send to acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ccgp_router_cycles_in_flight", Help: "Router cycles whose batches are being sent (at most the pipeline depth)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.routed, m.batches, m.sendErrors, m.rejected, m.batchSize, m.sendSeconds, m.inflight} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
