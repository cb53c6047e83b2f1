package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ccgpmesh/ccgp/mesh/offence"
)

// offenceLog counts every offence record the relay's parts report (a
// Prometheus counter by stage, reason and the org and relay it claims to
// come from: those come from the registry or are "unknown", so the label
// set stays bounded) and writes the records to the offenders topic, in
// batches, off the hot path. Report never blocks: when the queue is full
// a record is counted in the metric and as dropped, not written.
type offenceLog struct {
	prod    *kgo.Client
	topic   string
	log     *slog.Logger
	q       chan offence.Record
	count   *prometheus.CounterVec
	dropped prometheus.Counter
	limit   *logLimit
}

func newOffenceLog(prod *kgo.Client, topic string, log *slog.Logger, reg prometheus.Registerer, relayID string) (*offenceLog, error) {
	l := &offenceLog{prod: prod, topic: topic, log: log, q: make(chan offence.Record, 4096),
		count: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ccgp_offences_total",
			Help:        "Offences detected by this relay: packets dropped at stage 1, receipts contradicted by a chain; by stage, reason and the org and relay they claim to come from.",
			ConstLabels: prometheus.Labels{"reporter": relayID}}, []string{"stage", "reason", "org", "relay"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "ccgp_offences_unwritten_total",
			Help:        "Offence records counted but not written to the offenders topic because its queue was full.",
			ConstLabels: prometheus.Labels{"reporter": relayID}}),
		limit: newLogLimit(time.Minute, 20),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{l.count, l.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

// Report implements offence.Reporter.
func (l *offenceLog) Report(r offence.Record) {
	l.count.WithLabelValues(r.Stage, r.Reason, r.Org, r.Relay).Inc()
	if l.limit.allow() {
		l.log.Warn("offence", "stage", r.Stage, "reason", r.Reason, "org", r.Org, "relay", r.Relay, "pipe", r.Pipe, "seq", r.Seq, "detail", r.Detail)
	}
	select {
	case l.q <- r:
	default:
		l.dropped.Inc()
	}
}

// Run writes queued records until ctx ends, then what is still queued.
func (l *offenceLog) Run(ctx context.Context) error {
	batch := make([]*kgo.Record, 0, 256)
	flush := func(ctx context.Context) {
		if len(batch) == 0 {
			return
		}
		if err := l.prod.ProduceSync(ctx, batch...).FirstErr(); err != nil && ctx.Err() == nil {
			l.log.Warn("offence records not written", "records", len(batch), "err", err)
		}
		batch = batch[:0]
	}
	add := func(r offence.Record) {
		v, err := offence.Encode(r)
		if err != nil {
			return
		}
		batch = append(batch, &kgo.Record{Topic: l.topic, Key: []byte(r.Org), Value: v})
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			for {
				select {
				case r := <-l.q:
					add(r)
				default:
					flush(fctx)
					return nil
				}
			}
		case r := <-l.q:
			add(r)
		more: // take what else is queued, up to a batch
			for len(batch) < cap(batch) {
				select {
				case r := <-l.q:
					add(r)
				default:
					break more
				}
			}
			flush(ctx)
		}
	}
}

// logLimit allows n log lines per period.
type logLimit struct {
	every time.Duration
	n     int

	mu    sync.Mutex // guards the following
	start time.Time
	used  int
}

func newLogLimit(every time.Duration, n int) *logLimit { return &logLimit{every: every, n: n} }

func (l *logLimit) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.start) > l.every {
		l.start, l.used = now, 0
	}
	l.used++
	return l.used <= l.n
}
