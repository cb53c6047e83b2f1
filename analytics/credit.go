package analytics

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ccgpmesh/ccgp/govchain"
)

// Credit scoring: a score per org and per relay over a window, from the
// ledger (docs/analytics.md, "Credit scores"). The ledger does the work in
// ClickHouse: each packet of the window gets an outcome and the party at
// fault for it (creditQueries.packets), then the counts, offences and
// evidence digest per party are aggregated (creditQueries.scores); Go only
// combines the counts into components and words the reasons.
//
// Attribution, per packet of the window (by its source event time):
//  1. DELIVERED: good for all four parties (source and destination relay
//     and org); its latency is judged for timeliness unless the packet
//     has an exception record (a retried packet's delay is the
//     exception's, judged by its cause below, not by the clock).
//  2. Refused by the destination relay, where that relay proved the packet
//     forged by its source (a proven receiver-stage offence on the same
//     pipe and sequence): the source relay's fault, and its org's.
//  3. Refused or timed out with a destination tx or height: the destination
//     chain decided (an outage, an app refusal, a timeout it recorded). No
//     party's fault: left out of every party's judgement, counted only.
//  4. Refused without one: the destination relay refused before its chain:
//     its fault (delivery), and its org's.
//  5. No receipt, and newer than window end less Grace: too soon to judge.
//  6. No receipt while the destination relay signed receipts in the same
//     or the next 5-minute bucket (it was receiving): the source relay did
//     not deliver: its fault (delivery), and its org's.
//  7. No receipt while it signed none: the destination relay was down:
//     its fault (availability), and its org's, never the source's.
// A rollback (exceptions state ROLLED_BACK) of a packet of cases 2, 4, 6, 7
// is a compensation its party at fault caused. Proven offences (offenders
// proven = 1) of a relay count against it and its org; claimed ones are
// counted and shown, never weighted.

// CreditWindow is what Credit scores: the window and the objectives that
// judge timeliness. Zero fields take the defaults (withDefaults).
type CreditWindow struct {
	Start, End time.Time
	// Objective is the latency (source event to receipt) a delivered
	// packet should meet; Objectives overrides it per pipe id. Default 2 s.
	Objective  time.Duration
	Objectives map[string]time.Duration
	// StallFactor relaxes the objective in a network-wide stall: a packet
	// is timely within max(objective, StallFactor x the network's median
	// latency in the window), so a stall that slows everyone lowers no
	// one. Default 2.
	StallFactor float64
	// Grace: packets newer than End - Grace without a receipt are not
	// judged yet. Default 1 minute.
	Grace time.Duration
	// Now stamps the rows (computed, version); default time.Now.
	Now func() time.Time
}

func (w CreditWindow) withDefaults() CreditWindow {
	if w.Objective <= 0 {
		w.Objective = 2 * time.Second
	}
	if w.StallFactor <= 0 {
		w.StallFactor = 2
	}
	if w.Grace <= 0 {
		w.Grace = time.Minute
	}
	if w.Now == nil {
		w.Now = time.Now
	}
	return w
}

// Weights of the components in the score. Proven offences are not a term
// of the sum but a factor on it: each one halves the score, so one proven
// offence takes a perfect party to 500 (below the chain's default
// credit_restrict of 600) and two to 250 (below credit_expel, 300).
const (
	weightDelivery      = 0.4
	weightTimeliness    = 0.2
	weightCompensations = 0.2
	weightAvailability  = 0.2
	provenFactor        = 0.5
)

// CreditScore is one party's score over a window, with its components
// (each 0..1, 1 = nothing held against it), the counts behind them, and
// the reasons in words.
type CreditScore struct {
	Kind  string `json:"kind"` // "org" or "relay"
	Party string `json:"party"`
	// Score is the combined score, 0..1; Score1000 the same as the chain
	// takes it (MsgReportCredit.score).
	Score     float64   `json:"score"`
	Score1000 uint32    `json:"score_1000"`
	Start     time.Time `json:"window_start"`
	End       time.Time `json:"window_end"`

	Delivery      float64 `json:"delivery"`
	Timeliness    float64 `json:"timeliness"`
	Offences      float64 `json:"offences"`
	Compensations float64 `json:"compensations"`
	Availability  float64 `json:"availability"`

	Packets         uint64 `json:"packets"` // judged: the party's packets less chain-decided and pending ones
	Delivered       uint64 `json:"delivered"`
	TimeJudged      uint64 `json:"time_judged"` // delivered without an exception record: a retried packet's delay is the exception's
	Timely          uint64 `json:"timely"`
	DeliveryFaults  uint64 `json:"delivery_faults"`
	AvailFaults     uint64 `json:"availability_faults"`
	Compensated     uint64 `json:"compensations_caused"`
	ChainDecided    uint64 `json:"chain_decided"`
	Pending         uint64 `json:"pending"`
	ProvenOffences  uint64 `json:"proven_offences"`
	ClaimedOffences uint64 `json:"claimed_offences"`

	TimelyWithinMs uint64   `json:"timely_within_ms"` // the stall-relaxed bound for the default objective
	Reasons        []string `json:"reasons"`
	// EvidenceDigest is the sha256 over the evidence rows (docs/analytics.md).
	EvidenceDigest [32]byte `json:"-"`
	Digest         string   `json:"evidence_digest"`
}

var pipeID = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Credit scores every org and relay with packets or offences in the
// window, writes one credit_scores row per party (a later computation of
// the same window replaces it: version is the computation time in ms) and
// returns the scores sorted by kind and party.
func Credit(ctx context.Context, conn driver.Conn, db string, w CreditWindow) ([]CreditScore, error) {
	w = w.withDefaults()
	if !identifier.MatchString(db) {
		return nil, fmt.Errorf("%w: %q", ErrBadDatabase, db)
	}
	if !w.End.After(w.Start) {
		return nil, fmt.Errorf("analytics: credit window %s..%s: the end must be after the start", w.Start, w.End)
	}
	for p := range w.Objectives {
		if !pipeID.MatchString(p) {
			return nil, fmt.Errorf("analytics: credit objective for pipe %q: not a pipe id", p)
		}
	}
	ws, we := w.Start.Unix(), w.End.Unix()
	median, err := networkMedian(ctx, conn, db, ws, we)
	if err != nil {
		return nil, err
	}
	q := creditQueries{db: db, ws: ws, we: we, cutoffMs: w.End.Add(-w.Grace).UnixMilli(),
		limit: objectiveSQL(w, median)}
	scores := map[[2]string]*CreditScore{}
	get := func(kind, party string) *CreditScore {
		k := [2]string{kind, party}
		if s, ok := scores[k]; ok {
			return s
		}
		s := &CreditScore{Kind: kind, Party: party, Start: w.Start.UTC().Truncate(time.Second), End: w.End.UTC().Truncate(time.Second)}
		scores[k] = s
		return s
	}
	if err := q.scores(ctx, conn, get); err != nil {
		return nil, err
	}
	within := uint64(max(float64(w.Objective.Milliseconds()), w.StallFactor*median))
	out := make([]CreditScore, 0, len(scores))
	for _, s := range scores {
		s.TimelyWithinMs = within
		s.combine(w, median)
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Party < out[j].Party
	})
	if err := writeCredit(ctx, conn, db, out, w.Now().UTC()); err != nil {
		return nil, err
	}
	return out, nil
}

// networkMedian is the median latency (ms) of every packet of the window
// delivered, across the network; 0 when none was.
func networkMedian(ctx context.Context, conn driver.Conn, db string, ws, we int64) (float64, error) {
	var median float64
	var n uint64
	err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT quantile(0.5)(r.receipted_ms - p.event_ms), count()
FROM (SELECT packet_id, event_ms FROM %[1]s.packets FINAL WHERE event_time >= toDateTime(%[2]d) AND event_time < toDateTime(%[3]d)) AS p
ANY INNER JOIN (SELECT packet_id, receipted_ms FROM %[1]s.receipts FINAL WHERE status = 'DELIVERED') AS r USING packet_id
WHERE r.receipted_ms >= p.event_ms`, db, ws, we)).Scan(&median, &n)
	if err != nil {
		return 0, fmt.Errorf("analytics: credit: network median latency: %w", err)
	}
	if n == 0 || math.IsNaN(median) {
		return 0, nil
	}
	return median, nil
}

// objectiveSQL is the SQL expression of a packet's timeliness bound in ms:
// its pipe's objective, relaxed to StallFactor x the network median.
func objectiveSQL(w CreditWindow, median float64) string {
	obj := fmt.Sprint(w.Objective.Milliseconds())
	if len(w.Objectives) > 0 {
		pipes := make([]string, 0, len(w.Objectives))
		for p := range w.Objectives {
			pipes = append(pipes, p)
		}
		sort.Strings(pipes)
		keys, vals := make([]string, len(pipes)), make([]string, len(pipes))
		for i, p := range pipes {
			keys[i], vals[i] = "'"+p+"'", fmt.Sprint(w.Objectives[p].Milliseconds())
		}
		obj = fmt.Sprintf("transform(pipe, [%s], [%s], %s)", strings.Join(keys, ","), strings.Join(vals, ","), obj)
	}
	return fmt.Sprintf("greatest(toFloat64(%s), %f)", obj, w.StallFactor*median)
}

type creditQueries struct {
	db       string
	ws, we   int64
	cutoffMs int64
	limit    string
}

// packets is the SQL of one row per (party, packet) of the window: the
// packet's outcome (the attribution rule above), its latency, its
// exception state, and whether the party is at fault for delivery,
// availability or a compensation. A party at both ends (one org) is one
// row.
func (q creditQueries) packets() string {
	return fmt.Sprintf(`SELECT tupleElement(role, 1) AS kind, tupleElement(role, 2) AS party, pipe, seq,
    any(p_packet_id) AS packet_id, any(p_outcome) AS outcome, any(p_latency) AS latency_ms, any(p_ex_state) AS ex_state,
    any(p_timely) AS timely,
    max(tupleElement(role, 3)) AS dfault, max(tupleElement(role, 4)) AS afault,
    max((tupleElement(role, 3) OR tupleElement(role, 4)) AND p_ex_state = 'ROLLED_BACK') AS cfault
FROM (
    SELECT pipe, seq, packet_id AS p_packet_id, src_org, src_relay, dst_org, dst_relay, p_ex_state, p_latency, p_outcome,
        p_outcome = 'ok' AND p_ex_state = '' AND p_latency <= %[5]s AS p_timely
    FROM (
        SELECT pipe, seq, packet_id, src_org, src_relay, dst_org, dst_relay, state AS p_ex_state,
            toUInt64(if(status = 'DELIVERED' AND receipted_ms >= event_ms, receipted_ms - event_ms, 0)) AS p_latency,
            multiIf(status = 'DELIVERED', 'ok',
                status != '' AND (pipe, seq) IN %[7]s, 'forged',
                status != '' AND (dest_tx != '' OR dest_height > 0), 'chain',
                status != '', 'refused',
                event_ms > %[4]d, 'pending',
                (dst_relay, intDiv(event_ms, 300000)) IN %[6]s OR (dst_relay, intDiv(event_ms, 300000) + 1) IN %[6]s, 'missing_src',
                'missing_dst') AS p_outcome
        FROM (
            SELECT * FROM (
                SELECT pipe, seq, packet_id, src_org, src_relay, dst_org, dst_relay, event_ms
                FROM %[1]s.packets FINAL WHERE event_time >= toDateTime(%[2]d) AND event_time < toDateTime(%[3]d)
            ) ANY LEFT JOIN (
                SELECT packet_id, status, dest_tx, dest_height, receipted_ms FROM %[1]s.receipts FINAL
            ) USING packet_id
        ) ANY LEFT JOIN (
            SELECT pipe, seq, state FROM %[1]s.exceptions FINAL
        ) USING (pipe, seq)
    )
)
ARRAY JOIN [('relay', src_relay, p_outcome IN ('missing_src', 'forged'), toUInt8(0)),
            ('relay', dst_relay, p_outcome = 'refused', p_outcome = 'missing_dst'),
            ('org', src_org, p_outcome IN ('missing_src', 'forged'), toUInt8(0)),
            ('org', dst_org, p_outcome = 'refused', p_outcome = 'missing_dst')] AS role
WHERE party NOT IN ('', 'unknown')
GROUP BY kind, party, pipe, seq`, q.db, q.ws, q.we, q.cutoffMs, q.limit, q.up(), q.forged())
}

// forged is the SQL of the (pipe, seq) pairs a receiving relay proved
// forged by the relay that sent them (receiver stage, proven): the
// destination relay's refusal of such a packet is the source's fault.
func (q creditQueries) forged() string {
	return fmt.Sprintf(`(SELECT pipe, seq FROM %[1]s.offenders FINAL
    WHERE proven = 1 AND stage = 'receiver' AND pipe != '' AND time >= toDateTime(%[2]d) AND time < toDateTime(%[3]d))`, q.db, q.ws, q.we+3600)
}

// up is the SQL of the (relay, 5-minute bucket) pairs in which each relay
// signed receipts: when it was receiving. Receipts up to an hour after the
// window count, for packets late in it.
func (q creditQueries) up() string {
	return fmt.Sprintf(`(SELECT from_relay, intDiv(receipted_ms, 300000) FROM %[1]s.receipts FINAL
    WHERE receipted_time >= toDateTime(%[2]d) AND receipted_time < toDateTime(%[3]d))`, q.db, q.ws, q.we+3600)
}

// offenceRoles is the SQL of one row per (party, offence) of the window:
// an offence counts against the relay it names and that relay's org.
func (q creditQueries) offenceRoles(cols string) string {
	return fmt.Sprintf(`SELECT tupleElement(role, 1) AS kind, tupleElement(role, 2) AS party, %[4]s
FROM (SELECT * FROM %[1]s.offenders FINAL WHERE time >= toDateTime(%[2]d) AND time < toDateTime(%[3]d))
ARRAY JOIN [('relay', relay), ('org', org)] AS role
WHERE party NOT IN ('', 'unknown')`, q.db, q.ws, q.we, cols)
}

// scores runs the one query that gives every party's counts, offence
// reasons and evidence digest: the packet rows and the offence rows of
// the window, side by side (UNION ALL), grouped by party. The digest
// (docs/analytics.md, "The evidence digest") is the sha256 of a header
// line and the party's evidence lines, packets and offences, sorted
// bytewise; the server holds one party's lines in memory while it sorts.
func (q creditQueries) scores(ctx context.Context, conn driver.Conn, get func(kind, party string) *CreditScore) error {
	rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT kind, party,
    countIf(src = 'p'), countIf(outcome = 'ok'), countIf(outcome = 'chain'), countIf(outcome = 'pending'),
    sum(dfault), sum(afault), sum(timely), sum(cfault), countIf(outcome = 'ok' AND ex_state = ''),
    countIf(src = 'o' AND proven = 1), countIf(src = 'o' AND proven = 0),
    groupUniqArrayIf(reason, src = 'o' AND proven = 1), groupUniqArrayIf(reason, src = 'o' AND proven = 0),
    lower(hex(SHA256(concat('ccgp-credit/1\t', kind, '\t', party, '\t', toString(%[1]d), '\t', toString(%[2]d), '\n',
        arrayStringConcat(arraySort(groupArray(line)))))))
FROM (
    SELECT kind, party, 'p' AS src, outcome, ex_state, dfault, afault, timely, cfault, toUInt8(0) AS proven, '' AS reason,
        concat('packet\t', pipe, '\t', toString(seq), '\t', packet_id, '\t', outcome, '\t',
            toString(latency_ms), '\t', ex_state, '\n') AS line
    FROM (%[3]s)
    UNION ALL
    SELECT kind, party, 'o' AS src, '' AS outcome, '' AS ex_state, toUInt8(0) AS dfault, toUInt8(0) AS afault, toUInt8(0) AS timely,
        toUInt8(0) AS cfault, proven, reason,
        concat('offence\t', toString(time_ms), '\t', reporter, '\t', stage, '\t', reason, '\t', pipe, '\t',
            toString(seq), '\t', packet_id, '\t', toString(proven), '\n') AS line
    FROM (%[4]s)
)
GROUP BY kind, party`, q.ws, q.we, q.packets(), q.offenceRoles("time_ms, reporter, stage, reason, pipe, seq, packet_id, proven")))
	if err != nil {
		return fmt.Errorf("analytics: credit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var kind, party, digest string
		var all, ok, chain, pending, d, a, timely, c, onTime, proven, claimed uint64
		var pr, cr []string
		if err := rows.Scan(&kind, &party, &all, &ok, &chain, &pending, &d, &a, &timely, &c, &onTime, &proven, &claimed, &pr, &cr, &digest); err != nil {
			return fmt.Errorf("analytics: credit: %w", err)
		}
		s := get(kind, party)
		s.Packets, s.Delivered, s.ChainDecided, s.Pending = all-chain-pending, ok, chain, pending
		s.DeliveryFaults, s.AvailFaults, s.Timely, s.Compensated, s.TimeJudged = d, a, timely, c, onTime
		s.ProvenOffences, s.ClaimedOffences = proven, claimed
		sort.Strings(pr)
		sort.Strings(cr)
		if proven > 0 {
			s.Reasons = append(s.Reasons, fmt.Sprintf("%d proven offences (%s): score x%g", proven, strings.Join(pr, ", "), math.Pow(provenFactor, float64(proven))))
		}
		if claimed > 0 {
			s.Reasons = append(s.Reasons, fmt.Sprintf("%d claimed offences (%s): counted, not weighted (anyone could have written them in its name)", claimed, strings.Join(cr, ", ")))
		}
		b, err := hex.DecodeString(digest)
		if err != nil || len(b) != sha256.Size {
			return fmt.Errorf("analytics: credit: evidence digest of %s %s: %q", kind, party, digest)
		}
		copy(s.EvidenceDigest[:], b)
		s.Digest = digest
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("analytics: credit: %w", err)
	}
	return nil
}

// share is 1 - bad/n, or 1 when there is nothing to judge.
func share(bad, n uint64) float64 {
	if n == 0 {
		return 1
	}
	return math.Max(0, 1-float64(bad)/float64(n))
}

// combine turns the counts into components, the score and the reasons.
func (s *CreditScore) combine(w CreditWindow, median float64) {
	s.Delivery = share(s.DeliveryFaults, s.Packets)
	s.Availability = share(s.AvailFaults, s.Packets)
	s.Compensations = share(s.Compensated, s.Packets)
	s.Timeliness = share(s.TimeJudged-min(s.Timely, s.TimeJudged), s.TimeJudged)
	s.Offences = math.Pow(provenFactor, float64(min(s.ProvenOffences, 64)))
	s.Score = s.Offences * (weightDelivery*s.Delivery + weightTimeliness*s.Timeliness +
		weightCompensations*s.Compensations + weightAvailability*s.Availability)
	s.Score1000 = uint32(math.Round(s.Score * 1000))
	var r []string
	if s.DeliveryFaults > 0 {
		r = append(r, fmt.Sprintf("%d of %d packets not delivered by its fault (refused before the chain, or not sent while the destination relay was receiving)", s.DeliveryFaults, s.Packets))
	}
	if s.AvailFaults > 0 {
		r = append(r, fmt.Sprintf("%d of %d packets undeliverable: the relay signed no receipt around their time (down)", s.AvailFaults, s.Packets))
	}
	if late := s.TimeJudged - min(s.Timely, s.TimeJudged); late > 0 {
		r = append(r, fmt.Sprintf("%d of %d delivered packets slower than %d ms (objective %s, or %g x the network median of %.0f ms)", late, s.TimeJudged, s.TimelyWithinMs, w.Objective, w.StallFactor, median))
	}
	if s.Compensated > 0 {
		r = append(r, fmt.Sprintf("%d rollbacks caused", s.Compensated))
	}
	if s.ChainDecided > 0 {
		r = append(r, fmt.Sprintf("%d packets refused or timed out by the destination chain: held against no relay", s.ChainDecided))
	}
	if s.Pending > 0 {
		r = append(r, fmt.Sprintf("%d packets too recent to judge", s.Pending))
	}
	s.Reasons = append(r, s.Reasons...)
	if len(s.Reasons) == 0 {
		s.Reasons = []string{fmt.Sprintf("%d packets, nothing held against it", s.Packets)}
	}
}

func writeCredit(ctx context.Context, conn driver.Conn, db string, scores []CreditScore, now time.Time) error {
	if len(scores) == 0 {
		return nil
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".credit_scores (party, kind, window_start, window_end, score, delivery, timeliness, offences, compensations, availability, packets, proven_offences, computed, evidence_digest, version)")
	if err != nil {
		return fmt.Errorf("analytics: credit: write scores: %w", err)
	}
	defer b.Abort()
	for _, s := range scores {
		if err := b.Append(s.Party, s.Kind, s.Start, s.End, s.Score, s.Delivery, s.Timeliness, s.Offences, s.Compensations,
			s.Availability, s.Packets, s.ProvenOffences, now, s.Digest, uint64(now.UnixMilli())); err != nil {
			return fmt.Errorf("analytics: credit: write scores: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("analytics: credit: write scores: %w", err)
	}
	return nil
}

// Report is the score as the chain takes it: MsgReportCredit, signed by an
// auditor account and sent with govchain.Client.Submit.
func (s CreditScore) Report() *govchain.MsgReportCredit {
	kind := govchain.PartyKind_PARTY_ORG
	if s.Kind == "relay" {
		kind = govchain.PartyKind_PARTY_RELAY
	}
	return &govchain.MsgReportCredit{Kind: kind, Party: s.Party, Score: s.Score1000, WindowStart: s.Start.Unix(),
		WindowEnd: s.End.Unix(), EvidenceDigest: s.EvidenceDigest[:]}
}
