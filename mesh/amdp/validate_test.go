package amdp

import (
	"errors"
	"strings"
	"testing"
)

func TestPacketValidate(t *testing.T) {
	l := DefaultLimits()
	cases := []struct {
		name   string
		mutate func(p *Packet)
		want   error
		field  string
	}{
		{"valid", func(p *Packet) {}, nil, ""},
		{"max payload", func(p *Packet) { p.Payload = make([]byte, l.MaxPayload) }, nil, ""},
		{"empty payload", func(p *Packet) { p.Payload = nil }, nil, ""},
		{"only height timeout", func(p *Packet) { p.TimeoutUnixMs = 0 }, nil, ""},
		{"only time timeout", func(p *Packet) { p.TimeoutHeight = 0 }, nil, ""},
		{"no pipe", func(p *Packet) { p.PipeId = "" }, ErrMissingField, "pipe_id"},
		{"long pipe", func(p *Packet) { p.PipeId = strings.Repeat("p", l.MaxPipeIDLen+1) }, ErrFieldTooLong, "pipe_id"},
		{"non-UTF-8 pipe", func(p *Packet) { p.PipeId = "pipe\xff" }, ErrMalformed, "pipe_id"},
		{"zero sequence", func(p *Packet) { p.Sequence = 0 }, ErrBadSequence, "sequence"},
		{"unspecified operation", func(p *Packet) { p.Operation = Operation_OPERATION_UNSPECIFIED }, ErrBadOperation, "operation"},
		{"unknown operation", func(p *Packet) { p.Operation = 9 }, ErrBadOperation, "operation"},
		{"payload too large", func(p *Packet) { p.Payload = make([]byte, l.MaxPayload+1) }, ErrPayloadTooLarge, "payload"},
		{"no timeout", func(p *Packet) { p.TimeoutHeight, p.TimeoutUnixMs = 0, 0 }, ErrNoTimeout, "timeout"},
		{"no credential", func(p *Packet) { p.Credential = nil }, ErrMissingField, "credential"},
		{"short signer", func(p *Packet) { p.Credential.Signer = p.Credential.Signer[:19] }, ErrBadCredential, "credential.signer"},
		{"no suite", func(p *Packet) { p.Credential.Suite = "" }, ErrMissingField, "credential.suite"},
		{"long suite", func(p *Packet) { p.Credential.Suite = strings.Repeat("s", 33) }, ErrFieldTooLong, "credential.suite"},
		{"no signature", func(p *Packet) { p.Signature = nil }, ErrMissingField, "signature"},
		{"long signature", func(p *Packet) { p.Signature = make([]byte, l.MaxSignatureLen+1) }, ErrFieldTooLong, "signature"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := signedPacket(t, "pipe-a", 1, []byte("payload"))
			c.mutate(p)
			checkRejection(t, p.Validate(l), c.want, c.field)
		})
	}
	var nilPacket *Packet
	checkRejection(t, nilPacket.Validate(l), ErrMissingField, "packet")
}

func TestBatchValidate(t *testing.T) {
	l := Limits{MaxPacketsPerBatch: 4}
	cases := []struct {
		name   string
		mutate func(b *Batch)
		want   error
		field  string
	}{
		{"valid", func(b *Batch) {}, nil, ""},
		{"no header", func(b *Batch) { b.Header = nil }, ErrMissingField, "header"},
		{"no from", func(b *Batch) { b.Header.FromRelay = "" }, ErrMissingField, "header.from_relay"},
		{"no to", func(b *Batch) { b.Header.ToRelay = "" }, ErrMissingField, "header.to_relay"},
		{"long to", func(b *Batch) { b.Header.ToRelay = strings.Repeat("r", 129) }, ErrFieldTooLong, "header.to_relay"},
		{"zero batch seq", func(b *Batch) { b.Header.BatchSeq = 0 }, ErrBadSequence, "header.batch_seq"},
		{"empty", func(b *Batch) { b.Packets = nil; b.Header.PacketCount = 0 }, ErrEmptyBatch, "packets"},
		{"too many", func(b *Batch) {
			b.Packets = append(b.Packets, b.Packets[0])
			b.Header.PacketCount = 5
		}, ErrTooManyPackets, "packets"},
		{"count too high", func(b *Batch) { b.Header.PacketCount++ }, ErrCountMismatch, "header.packet_count"},
		{"count too low", func(b *Batch) { b.Header.PacketCount-- }, ErrCountMismatch, "header.packet_count"},
		{"short root", func(b *Batch) { b.Header.MerkleRoot = b.Header.MerkleRoot[:31] }, ErrBadLength, "header.merkle_root"},
		{"no relay signature", func(b *Batch) { b.RelaySignature = nil }, ErrMissingField, "relay_signature"},
		{"nil packet", func(b *Batch) { b.Packets[2] = nil }, ErrMissingField, "packets[2].packet"},
		{"bad packet", func(b *Batch) { b.Packets[3].Payload = make([]byte, 64<<10+1) }, ErrPayloadTooLarge, "packets[3].payload"},
		{"bad packet credential", func(b *Batch) { b.Packets[1].Credential.Signer = nil }, ErrBadCredential, "packets[1].credential.signer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := sealedBatch(t, 4, 64)
			c.mutate(b)
			checkRejection(t, b.Validate(l), c.want, c.field)
		})
	}
}

func TestReceiptValidate(t *testing.T) {
	l := DefaultLimits()
	cases := []struct {
		name   string
		mutate func(r *Receipt)
		want   error
		field  string
	}{
		{"delivered", func(r *Receipt) {}, nil, ""},
		{"failed without result", func(r *Receipt) { r.Status, r.DestTxHash, r.ResultHash = StatusFailed, nil, nil }, nil, ""},
		{"rejected with tx", func(r *Receipt) { r.Status = StatusRejected }, nil, ""},
		{"short packet id", func(r *Receipt) { r.PacketId = r.PacketId[:16] }, ErrBadLength, "packet_id"},
		{"unspecified status", func(r *Receipt) { r.Status = 0 }, ErrBadStatus, "status"},
		{"unknown status", func(r *Receipt) { r.Status = 99 }, ErrBadStatus, "status"},
		{"delivered without tx", func(r *Receipt) { r.DestTxHash = nil }, ErrMissingField, "dest_tx_hash"},
		{"long tx hash", func(r *Receipt) { r.DestTxHash = make([]byte, l.MaxTxHashLen+1) }, ErrFieldTooLong, "dest_tx_hash"},
		{"delivered without result", func(r *Receipt) { r.ResultHash = nil }, ErrBadLength, "result_hash"},
		{"failed with short result", func(r *Receipt) { r.Status, r.ResultHash = StatusFailed, []byte{1} }, ErrBadLength, "result_hash"},
		{"long reason", func(r *Receipt) { r.Reason = strings.Repeat("x", l.MaxReasonLen+1) }, ErrFieldTooLong, "reason"},
		{"non-UTF-8 reason", func(r *Receipt) { r.Reason = "\xc3" }, ErrMalformed, "reason"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newReceipt(1)
			c.mutate(r)
			checkRejection(t, r.Validate(l), c.want, c.field)
		})
	}
}

func TestReceiptBatchValidate(t *testing.T) {
	l := Limits{MaxPacketsPerBatch: 3}
	cases := []struct {
		name   string
		mutate func(rb *ReceiptBatch)
		want   error
		field  string
	}{
		{"valid", func(rb *ReceiptBatch) {}, nil, ""},
		{"no header", func(rb *ReceiptBatch) { rb.Header = nil }, ErrMissingField, "header"},
		{"no from", func(rb *ReceiptBatch) { rb.Header.FromRelay = "" }, ErrMissingField, "header.from_relay"},
		{"zero batch seq", func(rb *ReceiptBatch) { rb.Header.BatchSeq = 0 }, ErrBadSequence, "header.batch_seq"},
		{"empty", func(rb *ReceiptBatch) { rb.Receipts = nil; rb.Header.ReceiptCount = 0 }, ErrEmptyBatch, "receipts"},
		{"too many", func(rb *ReceiptBatch) {
			rb.Receipts = append(rb.Receipts, newReceipt(9))
			rb.Header.ReceiptCount++
		}, ErrTooManyReceipts, "receipts"},
		{"count mismatch", func(rb *ReceiptBatch) { rb.Header.ReceiptCount = 2 }, ErrCountMismatch, "header.receipt_count"},
		{"long root", func(rb *ReceiptBatch) { rb.Header.MerkleRoot = append(rb.Header.MerkleRoot, 0) }, ErrBadLength, "header.merkle_root"},
		{"long signature", func(rb *ReceiptBatch) { rb.RelaySignature = make([]byte, 8<<10+1) }, ErrFieldTooLong, "relay_signature"},
		{"bad receipt", func(rb *ReceiptBatch) { rb.Receipts[2].Status = 0 }, ErrBadStatus, "receipts[2].status"},
		{"nil receipt", func(rb *ReceiptBatch) { rb.Receipts[0] = nil }, ErrMissingField, "receipts[0].receipt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rb := sealedReceiptBatch(t, 3)
			c.mutate(rb)
			checkRejection(t, rb.Validate(l), c.want, c.field)
		})
	}
}

// checkRejection asserts err is nil when want is, and otherwise a
// *ValidationError for field that wraps want and has want's label.
func checkRejection(t *testing.T, err, want error, field string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected rejection: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("%v is not a *ValidationError", err)
	}
	if field != "" && ve.Field != field {
		t.Fatalf("field %q, want %q (%v)", ve.Field, field, err)
	}
	if Reason(err) != Reason(want) || Reason(err) == "other" {
		t.Fatalf("Reason = %q, want %q", Reason(err), Reason(want))
	}
}

func TestLimitsDefaults(t *testing.T) {
	if (Limits{}).WithDefaults() != DefaultLimits() {
		t.Fatal("zero Limits do not take the defaults")
	}
	l := Limits{MaxPayload: 10, MaxReasonLen: -1}.WithDefaults()
	if l.MaxPayload != 10 || l.MaxReasonLen != DefaultLimits().MaxReasonLen || l.MaxBatchBytes != 16<<20 {
		t.Fatalf("partial limits: %+v", l)
	}
	p := signedPacket(t, "pipe", 1, make([]byte, 11))
	checkRejection(t, p.Validate(Limits{MaxPayload: 10}), ErrPayloadTooLarge, "payload")
}

func TestReasonLabels(t *testing.T) {
	sentinels := []error{
		ErrMalformed, ErrMissingField, ErrFieldTooLong, ErrBadLength, ErrPayloadTooLarge,
		ErrPacketTooLarge, ErrBadSequence, ErrBadOperation, ErrBadStatus, ErrNoTimeout,
		ErrBadCredential, ErrBadSignature, ErrTooManyPackets, ErrTooManyReceipts, ErrEmptyBatch,
		ErrCountMismatch, ErrMerkleRoot, ErrDuplicatePacket, ErrBatchTooLarge,
		ErrDecompressedTooLarge, ErrBadFrame, ErrShortFrame,
	}
	seen := map[string]error{}
	for _, s := range sentinels {
		label := Reason(s)
		if label == "" || label == "other" || strings.ContainsAny(label, " -.") {
			t.Errorf("%v has label %q", s, label)
		}
		if prev, dup := seen[label]; dup {
			t.Errorf("%v and %v share label %q", s, prev, label)
		}
		seen[label] = s
		if got := Reason(invalid("f", s, "detail")); got != label {
			t.Errorf("wrapped %v: label %q, want %q", s, got, label)
		}
	}
	if Reason(nil) != "" || Reason(errors.New("x")) != "other" {
		t.Error("nil or foreign error labelled wrongly")
	}
	if got := Reason(ErrPayloadTooLarge); got != "payload_too_large" {
		t.Errorf("label changed: %q", got)
	}
}

func TestValidationErrorMessage(t *testing.T) {
	err := within("packets[3]", invalidf("payload", ErrPayloadTooLarge, "%d bytes", 70000))
	if got, want := err.Error(), "amdp: packets[3].payload: payload too large: 70000 bytes"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
