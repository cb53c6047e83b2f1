// Package offence is the record of a party's misbehaviour as the mesh
// detects it: a packet that fails stage 1 (forged, misrouted, malformed,
// out of sequence), a batch or receipt that does not verify, a receipt
// that the destination chain contradicts. Relays write each record to the
// offenders topic (Topic) for analytics and count it in a metric by
// reason and by the org and relay it claims to come from. A record is
// evidence for people and for scoring; it never causes an effect on a
// chain by itself.
package offence

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// Topic is the Kafka topic of offence records, keyed by the claimed org.
const Topic = "ccgp.offenders"

// Stages at which an offence is detected.
const (
	StageRouter      = "router"      // the source relay's stage-1 check
	StageReceiver    = "receiver"    // the destination relay's checks
	StageVerifier    = "verifier"    // receipts against anchors and the destination chain
	StageCompensator = "compensator" // evidence checked before a rollback
)

// Unknown names a party that the record cannot attribute: the packet names
// no registered pipe, so the org and relay it claims are unknown.
const Unknown = "unknown"

// MaxEvidence bounds the evidence bytes a record carries.
const MaxEvidence = 8 << 10

// Record is one offence.
type Record struct {
	TimeUnixMs int64  `json:"time_unix_ms"`
	Reporter   string `json:"reporter"` // the relay that detected it
	Stage      string `json:"stage"`
	Reason     string `json:"reason"` // a stable label, as the metrics count it
	Org        string `json:"org"`    // the org it claims to come from, or Unknown
	Relay      string `json:"relay"`  // the relay it claims to come from, or Unknown
	Pipe       string `json:"pipe,omitempty"`
	Seq        uint64 `json:"seq,omitempty"`
	PacketID   string `json:"packet_id,omitempty"` // hex
	Detail     string `json:"detail,omitempty"`
	// Evidence is what was received (an encoded packet, batch header or
	// receipt), at most MaxEvidence bytes.
	Evidence []byte `json:"evidence,omitempty"`
	// Proven says the record attributes the offence to Relay (and Org) on
	// evidence a third party can check: a batch or receipt the relay
	// signed, sent over its authenticated connection, or a receipt its
	// destination chain contradicts. Not proven: what anyone could have
	// written in the claimed party's name (a Kafka record with a forged
	// signature, a copy of a genuinely signed packet, which is also what
	// a listener replaying after a crash produces), a certificate refused
	// at the handshake, a stream that came too slowly. Scoring weighs
	// proven offences; the others are counted and kept for people.
	Proven bool `json:"proven"`
}

// Reporter takes offence records. Report must not block: implementations
// queue and count what they cannot keep.
type Reporter interface {
	Report(r Record)
}

// ForPacket fills a record about packet p (which may be nil: undecodable
// bytes) whose pipe the registry returned (nil when unknown): the claimed
// org and relay are the pipe's source, the only party that can sign for
// it.
func ForPacket(stage, reason string, p *amdp.Packet, pipe *govchain.Pipe, raw []byte, detail string) Record {
	r := Record{Stage: stage, Reason: reason, Org: Unknown, Relay: Unknown, Detail: clip(detail, 512)}
	if p != nil {
		id := p.ID()
		r.Pipe, r.Seq, r.PacketID = clip(p.GetPipeId(), 256), p.GetSequence(), hex.EncodeToString(id[:])
	}
	if pipe != nil {
		r.Org, r.Relay = pipe.GetSource().GetOrg(), pipe.GetSource().GetRelayId()
	}
	if len(raw) > MaxEvidence {
		raw = raw[:MaxEvidence]
	}
	r.Evidence = raw
	return r
}

// ForRelay fills a record about a relay's batch or receipt: the claimed
// relay is the authenticated peer, and org its service's org (Unknown when
// not registered). The record is not Proven until the caller says so.
func ForRelay(stage, reason, relayID, org, detail string) Record {
	if org == "" {
		org = Unknown
	}
	if relayID == "" {
		relayID = Unknown
	}
	return Record{Stage: stage, Reason: reason, Org: org, Relay: relayID, Detail: clip(detail, 512)}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Encode is the record's encoding in the topic (JSON: analysts read it
// with any client).
func Encode(r Record) ([]byte, error) { return json.Marshal(r) }

// ErrBadRecord is returned by Decode for bytes that are not a record.
var ErrBadRecord = errors.New("offence: bad record")

// Decode decodes a record from the topic; input over 64 KiB is refused
// before parsing.
func Decode(b []byte) (Record, error) {
	var r Record
	if len(b) > 64<<10 {
		return r, fmt.Errorf("%w: %d bytes", ErrBadRecord, len(b))
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	if r.Reason == "" || r.Stage == "" {
		return r, fmt.Errorf("%w: no stage or reason", ErrBadRecord)
	}
	return r, nil
}
