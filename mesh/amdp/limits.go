package amdp

// Limits bounds everything an AMDP peer can make this package allocate or
// accept. A field that is zero (or negative) takes its default, so
// Limits{MaxPayload: 1 << 20} changes one bound and keeps the others.
//
// Both ends of a pipe must agree on the limits that decide validity
// (payload, counts, lengths); the byte limits only bound the receiver's
// memory.
type Limits struct {
	// MaxPayload bounds a packet's payload. Default 64 KiB.
	MaxPayload int
	// MaxPacketsPerBatch bounds the packets in a batch and the receipts in
	// a receipt batch (which acknowledges one batch). Default 4096.
	MaxPacketsPerBatch int
	// MaxBatchBytes bounds an encoded batch or receipt batch as handed to
	// DecodeBatch/DecodeReceiptBatch, and a frame body as it travels on the
	// wire, compressed or not. Default 16 MiB.
	MaxBatchBytes int
	// MaxDecompressed bounds what a compressed frame body may decompress
	// to. Default 32 MiB.
	MaxDecompressed int
	// MaxPipeIDLen bounds a pipe id in bytes. Default 128.
	MaxPipeIDLen int
	// MaxRelayIDLen bounds a relay id in bytes. Default 128.
	MaxRelayIDLen int
	// MaxReasonLen bounds a receipt's reason in bytes. Default 512.
	MaxReasonLen int
	// MaxTxHashLen bounds a receipt's destination tx hash. Default 128.
	MaxTxHashLen int
	// MaxSignatureLen bounds any signature. Default 8 KiB, room for the
	// post-quantum and hybrid suites (ML-DSA-65 signatures are 3309 bytes).
	MaxSignatureLen int
}

// maxSuiteLen bounds a credential's suite name. Suite names are short
// protocol constants, so this is not configurable.
const maxSuiteLen = 32

// DefaultLimits returns the limits that AMDP peers use unless configured
// otherwise.
func DefaultLimits() Limits {
	return Limits{
		MaxPayload:         64 << 10,
		MaxPacketsPerBatch: 4096,
		MaxBatchBytes:      16 << 20,
		MaxDecompressed:    32 << 20,
		MaxPipeIDLen:       128,
		MaxRelayIDLen:      128,
		MaxReasonLen:       512,
		MaxTxHashLen:       128,
		MaxSignatureLen:    8 << 10,
	}
}

// WithDefaults fills the zero fields of l from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	def := func(v *int, dv int) {
		if *v <= 0 {
			*v = dv
		}
	}
	def(&l.MaxPayload, d.MaxPayload)
	def(&l.MaxPacketsPerBatch, d.MaxPacketsPerBatch)
	def(&l.MaxBatchBytes, d.MaxBatchBytes)
	def(&l.MaxDecompressed, d.MaxDecompressed)
	def(&l.MaxPipeIDLen, d.MaxPipeIDLen)
	def(&l.MaxRelayIDLen, d.MaxRelayIDLen)
	def(&l.MaxReasonLen, d.MaxReasonLen)
	def(&l.MaxTxHashLen, d.MaxTxHashLen)
	def(&l.MaxSignatureLen, d.MaxSignatureLen)
	return l
}

// maxPacketBytes is an upper bound on the protobuf encoding of any packet
// valid under l: every field at its limit plus tags and length prefixes.
func (l Limits) maxPacketBytes() int {
	const perField = 1 + 10 // tag + longest varint length or value
	return l.MaxPayload + l.MaxPipeIDLen + l.MaxSignatureLen +
		maxSuiteLen + 20 + // credential suite and signer
		12*perField // 8 packet fields, 2 credential fields, slack
}
