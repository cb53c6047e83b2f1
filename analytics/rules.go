package analytics

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// defaultRules is the rule set the binary carries; deploy/analytics/rules.yaml
// is the same file for operators to copy and edit (a test keeps the two
// equal).
//
//go:embed anomaly_rules.yaml
var defaultRules []byte

// Rule kinds: what a rule measures over its window.
const (
	// KindFailureRate: per pipe, the share of receipts that are not
	// DELIVERED, over at least MinPackets receipts.
	KindFailureRate = "failure_rate"
	// KindLatency: per pipe, the Quantile of request-to-receipt latency
	// (ms) above Threshold, the pipe's objective, over at least
	// MinPackets receipts.
	KindLatency = "latency"
	// KindOffences: per claimed org and relay, offence records with one
	// of Reasons, at least Threshold of them (claimed ones count too: a
	// warning is for people, not a sanction).
	KindOffences = "offences"
	// KindConsumerLag: the sink's consumer lag grew at every one of the
	// last Samples evaluations and is above Threshold records.
	KindConsumerLag = "consumer_lag"
	// KindAnchorLag: per source and destination relay, batches receipted
	// more than Threshold seconds ago whose receipt anchor is not on the
	// governance chain.
	KindAnchorLag = "anchor_lag"
	// KindSilentRelay: a relay whose pipes carried at least MinPackets
	// requests in the window (older than Grace) and which answered or
	// carried none of them: no receipt signed by it as destination, or
	// none for it as source.
	KindSilentRelay = "silent_relay"
	// KindReconciliation: reconciliation of the window found at least
	// Threshold differences.
	KindReconciliation = "reconciliation"
)

// Rule is one anomaly rule of deploy/analytics/rules.yaml.
type Rule struct {
	Name       string        `yaml:"name"`
	Kind       string        `yaml:"kind"`
	Severity   string        `yaml:"severity"` // warning or critical
	Window     time.Duration `yaml:"window"`
	Threshold  float64       `yaml:"threshold"`
	MinPackets uint64        `yaml:"min_packets,omitempty"`
	Quantile   float64       `yaml:"quantile,omitempty"` // latency
	Reasons    []string      `yaml:"reasons,omitempty"`  // offences
	Samples    int           `yaml:"samples,omitempty"`  // consumer_lag
	// Grace leaves the window's last part out where answers may still be
	// on their way (silent_relay, anchor_lag); default 10 s.
	Grace time.Duration `yaml:"grace,omitempty"`
}

// Rules is a rule file.
type Rules struct {
	Rules []Rule `yaml:"rules"`
}

// ErrBadRules wraps every refusal of a rule file.
var ErrBadRules = errors.New("analytics: bad anomaly rules")

// DefaultRules returns the rules the binary carries.
func DefaultRules() Rules {
	r, err := ParseRules(defaultRules)
	if err != nil {
		panic("analytics: the embedded anomaly_rules.yaml does not parse: " + err.Error()) // a test guards it
	}
	return r
}

// ParseRules reads and checks a rule file: unknown fields, unknown kinds,
// duplicate names and out-of-range values are refused, each naming the
// rule.
func ParseRules(b []byte) (Rules, error) {
	var r Rules
	d := yaml.NewDecoder(bytes.NewReader(b))
	d.KnownFields(true)
	if err := d.Decode(&r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrBadRules, err)
	}
	if len(r.Rules) == 0 {
		return r, fmt.Errorf("%w: no rules", ErrBadRules)
	}
	seen := map[string]bool{}
	for i := range r.Rules {
		x := &r.Rules[i]
		bad := func(f string, a ...any) error {
			return fmt.Errorf("%w: rule %d (%q): %s", ErrBadRules, i+1, x.Name, fmt.Sprintf(f, a...))
		}
		switch {
		case !identifier.MatchString(x.Name):
			return r, bad("name must be letters, digits and _")
		case seen[x.Name]:
			return r, bad("name used twice")
		case x.Severity == "":
			x.Severity = "warning"
		}
		seen[x.Name] = true
		if x.Severity != "warning" && x.Severity != "critical" {
			return r, bad("severity %q: warning or critical", x.Severity)
		}
		if x.Grace == 0 {
			x.Grace = 10 * time.Second
		}
		if x.Window <= 0 && x.Kind != KindConsumerLag {
			return r, bad("window must be positive")
		}
		if x.Threshold < 0 || x.Grace < 0 {
			return r, bad("threshold and grace must not be negative")
		}
		switch x.Kind {
		case KindFailureRate:
			if x.Threshold <= 0 || x.Threshold > 1 {
				return r, bad("threshold is a share of receipts: (0, 1]")
			}
		case KindLatency:
			if x.Quantile <= 0 || x.Quantile >= 1 {
				return r, bad("quantile must be in (0, 1), e.g. 0.99")
			}
			if x.Threshold <= 0 {
				return r, bad("threshold is the objective in ms: positive")
			}
		case KindOffences:
			if len(x.Reasons) == 0 {
				return r, bad("reasons: list the offence reasons it counts (e.g. bad_signature)")
			}
			if x.Threshold < 1 {
				x.Threshold = 1
			}
		case KindConsumerLag:
			if x.Samples < 2 {
				return r, bad("samples must be at least 2 (growth needs two looks)")
			}
		case KindAnchorLag:
			if x.Threshold <= 0 {
				return r, bad("threshold is seconds: positive")
			}
		case KindSilentRelay:
			if x.MinPackets == 0 {
				x.MinPackets = 1
			}
		case KindReconciliation:
			if x.Threshold < 1 {
				x.Threshold = 1
			}
		default:
			return r, bad("kind %q: one of %s, %s, %s, %s, %s, %s, %s", x.Kind, KindFailureRate, KindLatency,
				KindOffences, KindConsumerLag, KindAnchorLag, KindSilentRelay, KindReconciliation)
		}
	}
	return r, nil
}
