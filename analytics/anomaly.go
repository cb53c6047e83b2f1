package analytics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// AnomalyTopic is the Kafka topic of anomaly records: one when an anomaly
// starts and one when it is resolved, keyed by rule and key.
const AnomalyTopic = "ccgp.anomalies"

// Anomaly is one rule firing for one key (a pipe, an org and relay, a
// relay pair, the sink), from first_seen while it lasts.
type Anomaly struct {
	Rule      string    `json:"rule"`
	Key       string    `json:"key"`
	Severity  string    `json:"severity"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Message   string    `json:"message"`
	Resolved  bool      `json:"resolved"`
}

// EncodeAnomaly is the ccgp.anomalies record value (JSON).
func EncodeAnomaly(a Anomaly) ([]byte, error) { return json.Marshal(a) }

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	Conn  driver.Conn
	DB    string
	Rules Rules
	// Publish sends anomaly records (to AnomalyTopic); nil: table only. A
	// failed publish is retried at the next evaluation: the row is the
	// record, the topic its notification.
	Publish func(ctx context.Context, as []Anomaly) error
	// Lag is the sink's consumer lag now (ok false: not measured yet);
	// nil leaves consumer_lag rules idle.
	Lag func() (lag int64, ok bool)
	// Reconcile counts the differences reconciliation finds in [from,
	// to); nil leaves reconciliation rules idle.
	Reconcile func(ctx context.Context, from, to time.Time) (int, error)
	Now       func() time.Time // default time.Now
	Log       *slog.Logger
}

// Watcher evaluates anomaly rules over the ledger. Not safe for
// concurrent use: one goroutine calls Evaluate (or Run).
type Watcher struct {
	cfg    WatcherConfig
	q      string
	active map[string]*Anomaly // rule/key -> the firing under way
	unsent []Anomaly           // records not yet published
	lags   []int64             // the sink's lag at the last evaluations
}

// NewWatcher checks cfg and restores the anomalies still unresolved in
// the table (a restarted watcher continues them instead of starting new
// ones).
func NewWatcher(ctx context.Context, cfg WatcherConfig) (*Watcher, error) {
	if cfg.Conn == nil {
		return nil, errors.New("analytics: anomaly watcher: no ClickHouse connection")
	}
	if !identifier.MatchString(cfg.DB) {
		return nil, fmt.Errorf("%w: %q", ErrBadDatabase, cfg.DB)
	}
	if len(cfg.Rules.Rules) == 0 {
		return nil, fmt.Errorf("%w: no rules", ErrBadRules)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{cfg: cfg, q: "`" + cfg.DB + "`", active: map[string]*Anomaly{}}
	open, err := ListAnomalies(ctx, cfg.Conn, cfg.DB, time.Time{}, false)
	if err != nil {
		return nil, err
	}
	for i := range open {
		a := open[i]
		w.active[a.Rule+"/"+a.Key] = &a
	}
	return w, nil
}

// Run evaluates every `every` until ctx ends. An evaluation that fails
// (ClickHouse down) is logged and tried again at the next tick.
func (w *Watcher) Run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := w.Evaluate(ctx); err != nil && ctx.Err() == nil {
			w.cfg.Log.Warn("anomaly rules not evaluated; trying again", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// finding is one key of one rule over its threshold now.
type finding struct {
	key     string
	value   float64
	message string
}

// Evaluate runs every rule once: it writes a row for each anomaly that
// starts, goes on or is resolved, publishes a record for each start and
// resolution, and returns the anomalies active after it.
func (w *Watcher) Evaluate(ctx context.Context) ([]Anomaly, error) {
	now := w.cfg.Now().UTC().Truncate(time.Second)
	if w.cfg.Lag != nil {
		if lag, ok := w.cfg.Lag(); ok {
			w.lags = append(w.lags, lag)
		}
	}
	var rows, events []Anomaly
	var errs []error
	for _, r := range w.cfg.Rules.Rules {
		fs, idle, err := w.check(ctx, r, now)
		if err != nil {
			// One rule's failure does not hold up the others; its active
			// anomalies stay as they are until it can be checked.
			errs = append(errs, fmt.Errorf("rule %s: %w", r.Name, err))
			continue
		}
		if idle {
			continue
		}
		firing := map[string]bool{}
		for _, f := range fs {
			firing[f.key] = true
			id := r.Name + "/" + f.key
			a, ok := w.active[id]
			if !ok {
				a = &Anomaly{Rule: r.Name, Key: f.key, Severity: r.Severity, FirstSeen: now}
				w.active[id] = a
			}
			a.LastSeen, a.Value, a.Threshold, a.Message = now, f.value, r.Threshold, f.message
			rows = append(rows, *a)
			if !ok {
				events = append(events, *a)
			}
		}
		for id, a := range w.active {
			if a.Rule == r.Name && !firing[a.Key] {
				a.Resolved, a.LastSeen = true, now
				rows, events = append(rows, *a), append(events, *a)
				delete(w.active, id)
			}
		}
	}
	if len(rows) > 0 {
		if err := w.write(ctx, rows, now); err != nil {
			return nil, errors.Join(append(errs, err)...)
		}
	}
	w.unsent = append(w.unsent, events...)
	if w.cfg.Publish != nil && len(w.unsent) > 0 {
		if err := w.cfg.Publish(ctx, w.unsent); err != nil {
			errs = append(errs, fmt.Errorf("publish %d anomaly records: %w", len(w.unsent), err))
		} else {
			w.unsent = nil
		}
	} else if w.cfg.Publish == nil {
		w.unsent = nil
	}
	return w.Active(), errors.Join(errs...)
}

// Active returns the anomalies under way, by rule and key.
func (w *Watcher) Active() []Anomaly {
	out := make([]Anomaly, 0, len(w.active))
	for _, a := range w.active {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rule != out[j].Rule {
			return out[i].Rule < out[j].Rule
		}
		return out[i].Key < out[j].Key
	})
	return out
}

func (w *Watcher) write(ctx context.Context, as []Anomaly, now time.Time) error {
	b, err := w.cfg.Conn.PrepareBatch(ctx, "INSERT INTO "+w.q+".anomalies (rule, key, first_seen, last_seen, severity, value, threshold, message, resolved, version)")
	if err != nil {
		return fmt.Errorf("analytics: write anomalies: %w", err)
	}
	// version: the evaluation's time; within one evaluation a key appears
	// once, so the latest evaluation's row wins.
	v := uint64(now.UnixMilli())
	for _, a := range as {
		var res uint8
		if a.Resolved {
			res = 1
		}
		if err := b.Append(a.Rule, a.Key, a.FirstSeen, a.LastSeen, a.Severity, a.Value, a.Threshold, a.Message, res, v); err != nil {
			return fmt.Errorf("analytics: write anomalies: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("analytics: write anomalies: %w", err)
	}
	return nil
}

// check evaluates one rule at now. idle: the rule has nothing to look at
// (no lag source, no reconciler, too few lag samples): its anomalies stay
// as they are.
func (w *Watcher) check(ctx context.Context, r Rule, now time.Time) (fs []finding, idle bool, err error) {
	from := now.Add(-r.Window)
	fromMs, nowMs := uint64(from.UnixMilli()), uint64(now.UnixMilli())
	switch r.Kind {
	case KindFailureRate, KindLatency:
		return w.pipeReceipts(ctx, r, fromMs, nowMs)
	case KindOffences:
		return w.offences(ctx, r, fromMs, nowMs)
	case KindConsumerLag:
		if w.cfg.Lag == nil || len(w.lags) < r.Samples {
			return nil, true, nil
		}
		last := w.lags[len(w.lags)-r.Samples:]
		w.lags = slices.Clone(last) // bounded
		for i := 1; i < len(last); i++ {
			if last[i] <= last[i-1] {
				return nil, false, nil
			}
		}
		if lag := last[len(last)-1]; float64(lag) > r.Threshold {
			return []finding{{key: "sink", value: float64(lag),
				message: fmt.Sprintf("the sink's consumer lag grew at each of the last %d looks, to %d records (threshold %.0f): ClickHouse slow or down, or the sink behind the traffic", r.Samples, lag, r.Threshold)}}, false, nil
		}
		return nil, false, nil
	case KindAnchorLag:
		return w.anchorLag(ctx, r, fromMs, uint64(now.Add(-time.Duration(r.Threshold*float64(time.Second))).UnixMilli()))
	case KindSilentRelay:
		return w.silentRelays(ctx, r, fromMs, uint64(now.Add(-r.Grace).UnixMilli()))
	case KindReconciliation:
		if w.cfg.Reconcile == nil {
			return nil, true, nil
		}
		n, err := w.cfg.Reconcile(ctx, from, now)
		if err != nil {
			return nil, false, err
		}
		if float64(n) >= r.Threshold {
			return []finding{{key: "ledger", value: float64(n),
				message: fmt.Sprintf("reconciliation of the last %v found %d differences between the chains and the ledger (ccgp analytics reconcile)", r.Window, n)}}, false, nil
		}
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("%w: kind %q", ErrBadRules, r.Kind)
}

// pipeReceipts evaluates failure_rate and latency: per pipe, the receipts
// that came back in the window, joined to their requests.
func (w *Watcher) pipeReceipts(ctx context.Context, r Rule, fromMs, nowMs uint64) ([]finding, bool, error) {
	q := strconv.FormatFloat(r.Quantile, 'f', -1, 64)
	if r.Kind != KindLatency {
		q = "0.5"
	}
	// FINAL inside each side: a join reads the right side as it is on
	// disk. The quantile's level is a checked number (ParseRules), not
	// input text.
	rows, err := w.cfg.Conn.Query(ctx, `SELECT pipe, count() AS n, countIf(status != 'DELIVERED') AS bad,
    quantile(`+q+`)(toInt64(receipted_ms) - toInt64(event_ms)) AS lat
FROM (SELECT packet_id, pipe, event_ms FROM `+w.q+`.packets FINAL)
ANY INNER JOIN (SELECT packet_id, status, receipted_ms FROM `+w.q+`.receipts FINAL WHERE receipted_ms >= ? AND receipted_ms < ?)
USING packet_id
GROUP BY pipe ORDER BY pipe`, fromMs, nowMs)
	if err != nil {
		return nil, false, fmt.Errorf("analytics: %s: %w", r.Kind, err)
	}
	defer rows.Close()
	var fs []finding
	for rows.Next() {
		var pipe string
		var n, bad uint64
		var lat float64
		if err := rows.Scan(&pipe, &n, &bad, &lat); err != nil {
			return nil, false, fmt.Errorf("analytics: %s: %w", r.Kind, err)
		}
		if n < r.MinPackets {
			continue
		}
		switch r.Kind {
		case KindFailureRate:
			if share := float64(bad) / float64(n); share > r.Threshold {
				fs = append(fs, finding{key: pipe, value: share, message: fmt.Sprintf("pipe %s: %d of %d receipts in the last %v were not DELIVERED (%.1f%%, threshold %.1f%%)",
					pipe, bad, n, r.Window, 100*share, 100*r.Threshold)})
			}
		case KindLatency:
			if lat > r.Threshold {
				fs = append(fs, finding{key: pipe, value: lat, message: fmt.Sprintf("pipe %s: p%s latency %.0f ms over %d receipts in the last %v, above the objective %.0f ms",
					pipe, strconv.FormatFloat(100*r.Quantile, 'f', -1, 64), lat, n, r.Window, r.Threshold)})
			}
		}
	}
	return fs, false, rows.Err()
}

// offences evaluates an offences rule: per claimed org and relay.
func (w *Watcher) offences(ctx context.Context, r Rule, fromMs, nowMs uint64) ([]finding, bool, error) {
	rows, err := w.cfg.Conn.Query(ctx, `SELECT org, relay, reason, count() AS n, sum(proven) AS proven
FROM `+w.q+`.offenders FINAL WHERE time_ms >= ? AND time_ms < ?
GROUP BY org, relay, reason ORDER BY org, relay, reason`, fromMs, nowMs)
	if err != nil {
		return nil, false, fmt.Errorf("analytics: offences: %w", err)
	}
	defer rows.Close()
	type tally struct {
		n, proven uint64
		reasons   []string
	}
	by := map[string]*tally{}
	var keys []string
	for rows.Next() {
		var org, relay, reason string
		var n, proven uint64
		if err := rows.Scan(&org, &relay, &reason, &n, &proven); err != nil {
			return nil, false, fmt.Errorf("analytics: offences: %w", err)
		}
		if !slices.Contains(r.Reasons, reason) {
			continue
		}
		k := org + "/" + relay
		t, ok := by[k]
		if !ok {
			t = &tally{}
			by[k] = t
			keys = append(keys, k)
		}
		t.n += n
		t.proven += proven
		t.reasons = append(t.reasons, fmt.Sprintf("%d %s", n, reason))
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	var fs []finding
	for _, k := range keys {
		t := by[k]
		if float64(t.n) >= r.Threshold {
			fs = append(fs, finding{key: k, value: float64(t.n), message: fmt.Sprintf("org/relay %s: %d offence records in the last %v (%d proven): %s",
				k, t.n, r.Window, t.proven, strings.Join(t.reasons, ", "))})
		}
	}
	return fs, false, nil
}

// anchorLag evaluates an anchor_lag rule: batches receipted in the window
// before `before` whose receipt anchor the ledger does not hold.
func (w *Watcher) anchorLag(ctx context.Context, r Rule, fromMs, beforeMs uint64) ([]finding, bool, error) {
	// Receipts name the destination relay as from_relay and the source
	// as to_relay; anchors are keyed as the source opened them.
	rows, err := w.cfg.Conn.Query(ctx, `SELECT src, dst, count() AS batches FROM (
    SELECT to_relay AS src, from_relay AS dst, batch_seq FROM `+w.q+`.receipts FINAL
    WHERE receipted_ms >= ? AND receipted_ms < ?
    GROUP BY src, dst, batch_seq
) ANY LEFT JOIN (
    SELECT from_relay AS src, to_relay AS dst, batch_seq, receipt_height FROM `+w.q+`.anchors FINAL
) USING src, dst, batch_seq
WHERE receipt_height = 0
GROUP BY src, dst ORDER BY src, dst`, fromMs, beforeMs)
	if err != nil {
		return nil, false, fmt.Errorf("analytics: anchor lag: %w", err)
	}
	defer rows.Close()
	var fs []finding
	for rows.Next() {
		var src, dst string
		var n uint64
		if err := rows.Scan(&src, &dst, &n); err != nil {
			return nil, false, fmt.Errorf("analytics: anchor lag: %w", err)
		}
		fs = append(fs, finding{key: src + "->" + dst, value: float64(n), message: fmt.Sprintf("%s -> %s: %d batches receipted over %.0f s ago have no receipt anchor on the governance chain",
			src, dst, n, r.Threshold)})
	}
	return fs, false, rows.Err()
}

// silentRelays evaluates a silent_relay rule: requests in [from, before)
// on pipes a relay ends, and the receipts of those requests by relay.
func (w *Watcher) silentRelays(ctx context.Context, r Rule, fromMs, beforeMs uint64) ([]finding, bool, error) {
	rows, err := w.cfg.Conn.Query(ctx, `SELECT src_relay, dst_relay, count() AS n, countIf(status != '') AS answered
FROM (SELECT packet_id, src_relay, dst_relay FROM `+w.q+`.packets FINAL WHERE event_ms >= ? AND event_ms < ?)
ANY LEFT JOIN (SELECT packet_id, status FROM `+w.q+`.receipts FINAL)
USING packet_id
GROUP BY src_relay, dst_relay`, fromMs, beforeMs)
	if err != nil {
		return nil, false, fmt.Errorf("analytics: silent relay: %w", err)
	}
	defer rows.Close()
	// A relay is silent when every pipe it ends carried traffic in the
	// window and none of it was answered: as destination, no receipt; as
	// source, nothing receipted either. A destination that answered some
	// and not others is slow, not silent (the latency rule's to see).
	type side struct{ n, answered uint64 }
	asDst, asSrc := map[string]*side{}, map[string]*side{}
	add := func(m map[string]*side, k string, n, a uint64) {
		if k == "" {
			return // a pipe the registry did not know
		}
		s, ok := m[k]
		if !ok {
			s = &side{}
			m[k] = s
		}
		s.n += n
		s.answered += a
	}
	for rows.Next() {
		var src, dst string
		var n, answered uint64
		if err := rows.Scan(&src, &dst, &n, &answered); err != nil {
			return nil, false, fmt.Errorf("analytics: silent relay: %w", err)
		}
		add(asDst, dst, n, answered)
		add(asSrc, src, n, answered)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	found := map[string]finding{}
	for relay, s := range asDst {
		if s.n >= r.MinPackets && s.answered == 0 {
			found[relay] = finding{key: relay, value: float64(s.n), message: fmt.Sprintf("relay %s answered none of the %d requests sent to it in the last %v (no receipt)", relay, s.n, r.Window)}
		}
	}
	for relay, s := range asSrc {
		if _, ok := found[relay]; !ok && s.n >= r.MinPackets && s.answered == 0 {
			found[relay] = finding{key: relay, value: float64(s.n), message: fmt.Sprintf("relay %s carried none of the %d requests its chain emitted in the last %v (no receipt came back for any)", relay, s.n, r.Window)}
		}
	}
	fs := make([]finding, 0, len(found))
	for _, f := range found {
		fs = append(fs, f)
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].key < fs[j].key })
	return fs, false, nil
}

// ListAnomalies returns the anomalies in db whose last look is at or after
// since (zero: all), latest first; resolved ones only when all is true.
func ListAnomalies(ctx context.Context, conn driver.Conn, db string, since time.Time, all bool) ([]Anomaly, error) {
	if !identifier.MatchString(db) {
		return nil, fmt.Errorf("%w: %q", ErrBadDatabase, db)
	}
	rows, err := conn.Query(ctx, "SELECT rule, key, severity, first_seen, last_seen, value, threshold, message, resolved FROM `"+db+
		"`.anomalies FINAL WHERE last_seen >= ? AND (resolved = 0 OR ?) ORDER BY last_seen DESC, rule, key",
		since.UTC().Truncate(time.Second), boolInt(all))
	if err != nil {
		return nil, fmt.Errorf("analytics: list anomalies: %w", err)
	}
	defer rows.Close()
	var out []Anomaly
	for rows.Next() {
		var a Anomaly
		var res uint8
		if err := rows.Scan(&a.Rule, &a.Key, &a.Severity, &a.FirstSeen, &a.LastSeen, &a.Value, &a.Threshold, &a.Message, &res); err != nil {
			return nil, fmt.Errorf("analytics: list anomalies: %w", err)
		}
		a.Resolved = res == 1
		out = append(out, a)
	}
	return out, rows.Err()
}

func boolInt(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
