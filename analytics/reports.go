package analytics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Report is a named query over the ledger: what `ccgp analytics query NAME`
// runs. Its SQL runs on Debian's ClickHouse 18.16 and on current servers
// (no window functions, one JOIN per SELECT, FINAL inside every subquery
// since a join reads its right side as it is on disk), and it takes its
// parameters as bound values (@name, quoted by the driver), never spliced.
type Report struct {
	Name        string
	Description string
	// Params are the names of the parameters it takes (see ReportParam).
	Params []string
	// sql has {db} for the database (a validated identifier) and @name for
	// each bound value a parameter gives.
	sql string
}

// ReportParam is a parameter a report may take: a command-line flag of
// `ccgp analytics query`.
type ReportParam struct {
	Name string
	Help string
	// Default is used when the parameter is not given ("" for the
	// parameters that filter nothing when absent).
	Default  string
	Required bool
	// bind turns the given (or default) value into bound values, relative
	// to now for relative times.
	bind func(v string, now time.Time) ([]driver.NamedValue, error)
}

// maxDateTime is the last second a DateTime holds (2106-02-07): the
// default --until, so that an absent bound filters nothing.
const maxDateTime = math.MaxUint32

// ReportParams returns every parameter a report may take, by name.
func ReportParams() map[string]ReportParam {
	str := func(name string) func(string, time.Time) ([]driver.NamedValue, error) {
		return func(v string, _ time.Time) ([]driver.NamedValue, error) {
			return []driver.NamedValue{clickhouse.Named(name, v)}, nil
		}
	}
	tm := func(name string, absent uint64) func(string, time.Time) ([]driver.NamedValue, error) {
		return func(v string, now time.Time) ([]driver.NamedValue, error) {
			s := absent
			if v != "" {
				t, err := ParseReportTime(v, now)
				if err != nil {
					return nil, err
				}
				if t.Unix() < 0 || t.Unix() > maxDateTime {
					return nil, fmt.Errorf("%s is outside 1970..2106, what ClickHouse's DateTime holds", v)
				}
				s = uint64(t.Unix())
			}
			return []driver.NamedValue{clickhouse.Named(name, s)}, nil
		}
	}
	return map[string]ReportParam{
		"pipe":  {Name: "pipe", Help: "only this pipe (default: every pipe)", bind: str("pipe")},
		"org":   {Name: "org", Help: "only this org (default: every org)", bind: str("org")},
		"relay": {Name: "relay", Help: "only this relay (default: every relay)", bind: str("relay")},
		"since": {Name: "since", Help: "from this time, inclusive: RFC 3339, YYYY-MM-DD (UTC) or relative to now (-24h, -7d) (default: the beginning)", bind: tm("since", 0)},
		"until": {Name: "until", Help: "to this time, exclusive, same forms as --since (default: no end)", bind: tm("until", maxDateTime)},
		"limit": {Name: "limit", Help: "at most this many rows", Default: "20", bind: func(v string, _ time.Time) ([]driver.NamedValue, error) {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("%q is not a positive whole number", v)
			}
			return []driver.NamedValue{clickhouse.Named("limit", n)}, nil
		}},
		"packet": {Name: "packet", Help: "the packet, as PIPE/SEQ (e.g. pipe-1/42)", Required: true, bind: func(v string, _ time.Time) ([]driver.NamedValue, error) {
			i := strings.LastIndexByte(v, '/')
			if i <= 0 {
				return nil, fmt.Errorf("%q is not PIPE/SEQ", v)
			}
			seq, err := strconv.ParseUint(v[i+1:], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not PIPE/SEQ: the sequence %q is not a whole number", v, v[i+1:])
			}
			return []driver.NamedValue{clickhouse.Named("pipe", v[:i]), clickhouse.Named("seq", seq)}, nil
		}},
	}
}

// ParseReportTime reads a time as RFC 3339 (2026-12-01T10:00:00Z), a UTC
// date (2026-12-01), or a negative offset from now: a Go duration (-24h,
// -90m) or whole days (-7d).
func ParseReportTime(v string, now time.Time) (time.Time, error) {
	if strings.HasPrefix(v, "-") {
		if d, ok := strings.CutSuffix(v[1:], "d"); ok {
			n, err := strconv.ParseUint(d, 10, 16)
			if err != nil {
				return time.Time{}, fmt.Errorf("%q: want RFC 3339, YYYY-MM-DD, or -DURATION such as -24h or -7d", v)
			}
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: want RFC 3339, YYYY-MM-DD, or -DURATION such as -24h or -7d", v)
		}
		return now.Add(d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want RFC 3339, YYYY-MM-DD, or -DURATION such as -24h or -7d", v)
}

// The time window of the reports that take --since and --until, on a
// DateTime column.
func window(col string) string {
	return col + " >= toDateTime(@since) AND " + col + " < toDateTime(@until)"
}

// receiptsOf is a packet's receipt columns for a LEFT JOIN, renamed so
// that they cannot clash with the packet's: a packet with none has empty
// strings and zeros (join_use_nulls is 0 by default on 18.16 and on
// current servers).
const receiptsOf = `(SELECT packet_id, status AS r_status, reason AS r_reason, receipted_ms AS r_ms FROM {db}.receipts FINAL)`

// packetIDOf is the packet_id of the packet @pipe/@seq.
const packetIDOf = `(SELECT packet_id FROM {db}.packets FINAL WHERE pipe = @pipe AND seq = @seq)`

// Reports returns every report, sorted by name.
func Reports() []Report {
	rs := []Report{
		{
			Name:        "packet-history",
			Description: "one packet's life: its request, receipt, its batch's anchors, its exception record and offences naming it, in time order",
			Params:      []string{"packet"},
			// The anchors are those of the batch its receipt acknowledges:
			// the ledger ties a packet to its batch only through the receipt.
			sql: `SELECT time, event, detail FROM (
  SELECT event_time AS time, 1 AS ord, 'request' AS event,
         concat('packet_id=', packet_id, ' op=', operation, ' from=', src_org, '/', src_relay, ' to=', dst_org, '/', dst_relay, ' bytes=', toString(payload_bytes)) AS detail
  FROM {db}.packets FINAL WHERE pipe = @pipe AND seq = @seq
  UNION ALL
  SELECT receipted_time, 2, concat('receipt ', status),
         concat('batch=', to_relay, '/', toString(batch_seq), ' by=', from_relay, ' dest_tx=', dest_tx, ' dest_height=', toString(dest_height), if(reason = '', '', concat(' reason=', reason)))
  FROM {db}.receipts FINAL WHERE packet_id IN ` + packetIDOf + `
  UNION ALL
  SELECT open_time, 3, 'anchor open', concat('batch=', from_relay, '/', toString(batch_seq), ' root=', batch_root, ' tx=', open_tx, ' height=', toString(open_height))
  FROM {db}.anchors FINAL WHERE (from_relay, to_relay, batch_seq) IN (SELECT to_relay, from_relay, batch_seq FROM {db}.receipts FINAL WHERE packet_id IN ` + packetIDOf + `)
  UNION ALL
  SELECT receipt_time, 4, 'anchor receipt', concat('batch=', from_relay, '/', toString(batch_seq), ' tx=', receipt_tx, ' height=', toString(receipt_height))
  FROM {db}.anchors FINAL WHERE receipt_height > 0 AND (from_relay, to_relay, batch_seq) IN (SELECT to_relay, from_relay, batch_seq FROM {db}.receipts FINAL WHERE packet_id IN ` + packetIDOf + `)
  UNION ALL
  SELECT confirm_time, 5, 'anchor confirm', concat('batch=', from_relay, '/', toString(batch_seq), ' tx=', confirm_tx, ' height=', toString(confirm_height))
  FROM {db}.anchors FINAL WHERE confirm_height > 0 AND (from_relay, to_relay, batch_seq) IN (SELECT to_relay, from_relay, batch_seq FROM {db}.receipts FINAL WHERE packet_id IN ` + packetIDOf + `)
  UNION ALL
  SELECT updated, 6, concat('exception ', state),
         concat('reason=', reason, ' attempts=', toString(attempts), ' tx=', tx_hash, ' height=', toString(height), if(resolved_by = '', '', concat(' resolved_by=', resolved_by)))
  FROM {db}.exceptions FINAL WHERE pipe = @pipe AND seq = @seq
  UNION ALL
  SELECT time, 7, concat('offence ', stage, ' ', reason),
         concat('by=', org, '/', relay, ' proven=', toString(proven), ' reporter=', reporter, if(detail = '', '', concat(' ', detail)))
  FROM {db}.offenders FINAL WHERE (pipe = @pipe AND seq = @seq) OR packet_id IN ` + packetIDOf + `
)
ORDER BY time, ord, event, detail`,
		},
		{
			Name:        "pipe-daily",
			Description: "per pipe and UTC day (of the request): packets, receipted, delivered, failed (receipted not DELIVERED) and the failure rate among receipted",
			Params:      []string{"pipe", "since", "until"},
			sql: `SELECT toDate(event_time, 'UTC') AS day, pipe,
       count() AS packets,
       countIf(r_status != '') AS receipted,
       countIf(r_status = 'DELIVERED') AS delivered,
       countIf(r_status NOT IN ('', 'DELIVERED')) AS failed,
       if(receipted = 0, 0, round(failed / receipted, 4)) AS failure_rate
FROM (SELECT pipe, packet_id, event_time FROM {db}.packets FINAL
      WHERE (@pipe = '' OR pipe = @pipe) AND ` + window("event_time") + `)
ANY LEFT JOIN ` + receiptsOf + ` USING packet_id
GROUP BY day, pipe
ORDER BY day, pipe`,
		},
		{
			Name:        "latency-hourly",
			Description: "per pipe and UTC hour (of the request): receipted packets and their delivery latency, request to receipt, p50, p99 and max in ms",
			Params:      []string{"pipe", "since", "until"},
			sql: `SELECT hour, pipe, count() AS receipted,
       round(quantile(0.5)(latency_ms), 1) AS p50_ms,
       round(quantile(0.99)(latency_ms), 1) AS p99_ms,
       max(latency_ms) AS max_ms
FROM (
  SELECT toStartOfHour(event_time, 'UTC') AS hour, pipe, toInt64(r_ms) - toInt64(event_ms) AS latency_ms
  FROM (SELECT pipe, packet_id, event_ms, event_time FROM {db}.packets FINAL
        WHERE (@pipe = '' OR pipe = @pipe) AND ` + window("event_time") + `)
  ANY INNER JOIN ` + receiptsOf + ` USING packet_id
)
GROUP BY hour, pipe
ORDER BY hour, pipe`,
		},
		{
			Name:        "top-offenders",
			Description: "offences per org and relay: proven (evidence a third party can check) and claimed (anyone could have written them), most proven first",
			Params:      []string{"org", "since", "until", "limit"},
			sql: `SELECT org, relay,
       countIf(proven = 1) AS proven_offences,
       countIf(proven = 0) AS claimed_offences,
       count() AS total,
       max(time) AS last_seen
FROM (SELECT org, relay, proven, time FROM {db}.offenders FINAL
      WHERE (@org = '' OR org = @org) AND ` + window("time") + `)
GROUP BY org, relay
ORDER BY proven_offences DESC, total DESC, org, relay
LIMIT @limit`,
		},
		{
			Name:        "open-manual",
			Description: "packets whose exception record is in MANUAL (waiting for a person to resolve them), oldest first",
			Params:      []string{"pipe"},
			sql: `SELECT pipe, seq, packet_id, reason, attempts, updated AS manual_since, height, tx_hash
FROM {db}.exceptions FINAL
WHERE state = 'MANUAL' AND (@pipe = '' OR pipe = @pipe)
ORDER BY updated, pipe, seq`,
		},
		{
			Name:        "packets-per-anchor",
			Description: "per open-batches tx on the governance chain: batches it anchored, packets receipted in them, batches receipt-anchored and confirmed",
			Params:      []string{"relay", "since", "until"},
			sql: `SELECT open_tx, open_height, open_time,
       count() AS batches,
       sum(b_packets) AS packets,
       countIf(receipt_height > 0) AS receipt_anchored,
       countIf(confirm_height > 0) AS confirmed
FROM (SELECT from_relay, to_relay, batch_seq, open_tx, open_height, open_time, receipt_height, confirm_height
      FROM {db}.anchors FINAL
      WHERE (@relay = '' OR from_relay = @relay OR to_relay = @relay) AND ` + window("open_time") + `)
ANY LEFT JOIN (SELECT from_relay, to_relay, batch_seq, packets AS b_packets FROM {db}.batches FINAL)
USING (from_relay, to_relay, batch_seq)
GROUP BY open_tx, open_height, open_time
ORDER BY open_height, open_tx`,
		},
		{
			Name:        "pipe-backlog",
			Description: "per pipe: packets requested with no receipt yet, the oldest of them (seq and time)",
			Params:      []string{"pipe", "since", "until"},
			sql: `SELECT pipe, count() AS pending, min(seq) AS oldest_seq, min(event_time) AS oldest_time
FROM (SELECT pipe, seq, packet_id, event_time FROM {db}.packets FINAL
      WHERE (@pipe = '' OR pipe = @pipe) AND ` + window("event_time") + `)
ANY LEFT JOIN ` + receiptsOf + ` USING packet_id
WHERE r_status = ''
GROUP BY pipe
ORDER BY pending DESC, pipe`,
		},
		{
			Name:        "refusals-by-reason",
			Description: "receipts that are not DELIVERED (REJECTED, FAILED, TIMED_OUT) per status and reason: packets, destination relays, last seen",
			Params:      []string{"relay", "since", "until"},
			sql: `SELECT status, reason, count() AS packets, uniqExact(from_relay) AS dest_relays, max(receipted_time) AS last_seen
FROM (SELECT status, reason, from_relay, receipted_time FROM {db}.receipts FINAL
      WHERE status != 'DELIVERED' AND (@relay = '' OR from_relay = @relay OR to_relay = @relay) AND ` + window("receipted_time") + `)
GROUP BY status, reason
ORDER BY packets DESC, status, reason`,
		},
		{
			Name:        "governance-activity",
			Description: "governance txs per message type: accepted, refused and the refusal codes",
			Params:      []string{"org", "since", "until"},
			sql: `SELECT msg_type, count() AS txs, countIf(code = 0) AS accepted, countIf(code != 0) AS refused,
       arrayStringConcat(arrayMap(c -> toString(c), arraySort(groupUniqArrayIf(code, code != 0))), ',') AS refused_codes
FROM (SELECT msg_type, code FROM {db}.governance FINAL
      WHERE (@org = '' OR org = @org) AND ` + window("time") + `)
GROUP BY msg_type
ORDER BY txs DESC, msg_type`,
		},
		{
			Name:        "relay-throughput",
			Description: "per source and destination relay: packets requested, delivered, payload bytes, first and last request",
			Params:      []string{"org", "since", "until"},
			sql: `SELECT src_relay, dst_relay, count() AS packets, countIf(r_status = 'DELIVERED') AS delivered,
       sum(payload_bytes) AS bytes, min(event_time) AS first_request, max(event_time) AS last_request
FROM (SELECT src_relay, dst_relay, packet_id, payload_bytes, event_time FROM {db}.packets FINAL
      WHERE (@org = '' OR src_org = @org OR dst_org = @org) AND ` + window("event_time") + `)
ANY LEFT JOIN ` + receiptsOf + ` USING packet_id
GROUP BY src_relay, dst_relay
ORDER BY packets DESC, src_relay, dst_relay`,
		},
		{
			Name:        "exceptions-by-state",
			Description: "exception records per pipe and state: packets, retries (RETRYING entries) and the latest change",
			Params:      []string{"pipe", "since", "until"},
			sql: `SELECT pipe, state, count() AS packets, sum(attempts) AS retries, max(updated) AS last_change
FROM (SELECT pipe, state, attempts, updated FROM {db}.exceptions FINAL
      WHERE (@pipe = '' OR pipe = @pipe) AND ` + window("updated") + `)
GROUP BY pipe, state
ORDER BY pipe, state`,
		},
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	return rs
}

// LookupReport returns the report named name, or an error wrapping
// ErrUnknownReport.
func LookupReport(name string) (Report, error) {
	for _, r := range Reports() {
		if r.Name == name {
			return r, nil
		}
	}
	return Report{}, fmt.Errorf("%w: %q", ErrUnknownReport, name)
}

// SQL returns the report's statement for database db, with its @name
// placeholders still to bind.
func (r Report) SQL(db string) string { return strings.ReplaceAll(r.sql, "{db}", db) }

// Bind checks given (parameter name → value as typed) against the
// report's parameters and returns the bound values, defaults filled in.
// A parameter the report does not take, a missing required one or a bad
// value is an error wrapping ErrBadParam.
func (r Report) Bind(given map[string]string, now time.Time) ([]any, error) {
	all := ReportParams()
	for name := range given {
		if !contains(r.Params, name) {
			return nil, fmt.Errorf("%w: report %s does not take --%s (it takes %s)", ErrBadParam, r.Name, name, r.flagList())
		}
	}
	var args []any
	for _, name := range r.Params {
		p := all[name]
		v, ok := given[name]
		if !ok {
			if p.Required {
				return nil, fmt.Errorf("%w: report %s needs --%s (%s)", ErrBadParam, r.Name, name, p.Help)
			}
			v = p.Default
		}
		nv, err := p.bind(v, now)
		if err != nil {
			return nil, fmt.Errorf("%w: --%s: %v", ErrBadParam, name, err)
		}
		for _, a := range nv {
			args = append(args, a)
		}
	}
	return args, nil
}

func (r Report) flagList() string {
	if len(r.Params) == 0 {
		return "no parameters"
	}
	return "--" + strings.Join(r.Params, ", --")
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// ClickHouse's error codes for a missing table and database: the ledger
// not created, or created before the migration that added a table.
const (
	codeUnknownTable    = 60
	codeUnknownDatabase = 81
)

// Querier is what running a report needs of a ClickHouse connection;
// driver.Conn implements it.
type Querier interface {
	Query(ctx context.Context, query string, args ...any) (driver.Rows, error)
}

// Result is a report's answer: its columns (name and ClickHouse type) and
// rows, each value as the driver scanned it (string, uintN, intN, float64,
// time.Time).
type Result struct {
	Columns []string
	Types   []string
	Rows    [][]any
}

// RunReport runs r on database db with the given parameters (see Bind),
// relative times counted from now. A bad database name wraps
// ErrBadDatabase; bad parameters wrap ErrBadParam; anything else is the
// server's failure.
func RunReport(ctx context.Context, q Querier, db string, r Report, given map[string]string, now time.Time) (*Result, error) {
	if !identifier.MatchString(db) {
		return nil, fmt.Errorf("%w: %q", ErrBadDatabase, db)
	}
	args, err := r.Bind(given, now)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, r.SQL(db), args...)
	var ex *clickhouse.Exception
	if errors.As(err, &ex) && (ex.Code == codeUnknownTable || ex.Code == codeUnknownDatabase) {
		return nil, fmt.Errorf("analytics: report %s: %w (is the ledger there, at the current schema? 'ccgp analytics migrate --database %s')", r.Name, err, db)
	}
	if err != nil {
		return nil, fmt.Errorf("analytics: report %s: %w", r.Name, err)
	}
	defer rows.Close()
	res := &Result{}
	cts := rows.ColumnTypes()
	for _, ct := range cts {
		res.Columns = append(res.Columns, ct.Name())
		res.Types = append(res.Types, ct.DatabaseTypeName())
	}
	for rows.Next() {
		ptrs := make([]any, len(cts))
		for i, ct := range cts {
			ptrs[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("analytics: report %s: scan: %w", r.Name, err)
		}
		row := make([]any, len(ptrs))
		for i, p := range ptrs {
			row[i] = reflect.ValueOf(p).Elem().Interface()
		}
		res.Rows = append(res.Rows, row)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("analytics: report %s: %w", r.Name, err)
	}
	return res, nil
}
