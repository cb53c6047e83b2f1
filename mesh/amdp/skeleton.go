package amdp

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"
)

// Skeleton is b stripped to what names its packets: the header's relays
// and batch sequence, and each packet's pipe and sequence (a packet's id
// is a function of those two alone, see PacketID). Records that outlive
// a batch's delivery (the verifier's backlog, a receiver's owed
// receipts) keep the skeleton, not the payloads and signatures, which
// are most of a batch's bytes.
func (b *Batch) Skeleton() *Batch {
	h := b.GetHeader()
	sb := &Batch{Header: &BatchHeader{FromRelay: h.GetFromRelay(), ToRelay: h.GetToRelay(), BatchSeq: h.GetBatchSeq()},
		Packets: make([]*Packet, len(b.GetPackets()))}
	ps := make([]Packet, len(b.GetPackets()))
	for i, p := range b.GetPackets() {
		ps[i].PipeId, ps[i].Sequence = p.GetPipeId(), p.GetSequence()
		sb.Packets[i] = &ps[i]
	}
	return sb
}

// EncodeSkeletonRecord is the stored form of a batch's skeleton and the
// receipt batch that answers it: uvarint(len(skeleton)) | skeleton |
// receipts, both deterministic protobuf. The verifier's backlog and a
// receiver's owed receipts keep this record until the batch is settled.
func EncodeSkeletonRecord(skel *Batch, rb *ReceiptBatch) ([]byte, error) {
	det := proto.MarshalOptions{Deterministic: true}
	bb, err := det.Marshal(skel)
	if err != nil {
		return nil, fmt.Errorf("amdp: encode batch skeleton: %w", err)
	}
	v := make([]byte, 0, binary.MaxVarintLen64+len(bb)+det.Size(rb))
	v = binary.AppendUvarint(v, uint64(len(bb)))
	v = append(v, bb...)
	if v, err = det.MarshalAppend(v, rb); err != nil {
		return nil, fmt.Errorf("amdp: encode receipt batch: %w", err)
	}
	return v, nil
}

// DecodeSkeletonRecord reverses EncodeSkeletonRecord. It checks what a
// skeleton has (both headers, a named pipe per packet, at most one
// receipt per packet, l's packet count); a record is local state, so the
// signatures it no longer holds are not checked again.
func DecodeSkeletonRecord(v []byte, l Limits) (*Batch, *ReceiptBatch, error) {
	l = l.WithDefaults()
	n, w := binary.Uvarint(v)
	if w <= 0 || n > uint64(len(v)-w) {
		return nil, nil, fmt.Errorf("amdp: skeleton record: %w: bad length prefix", ErrMalformed)
	}
	b, rb := &Batch{}, &ReceiptBatch{}
	if err := unmarshal(v[w:w+int(n)], b, "batch skeleton"); err != nil {
		return nil, nil, err
	}
	if err := unmarshal(v[w+int(n):], rb, "receipt batch"); err != nil {
		return nil, nil, err
	}
	switch {
	case b.Header == nil || rb.Header == nil:
		return nil, nil, fmt.Errorf("amdp: skeleton record: %w: no header", ErrMalformed)
	case len(b.Packets) == 0 || len(b.Packets) > l.MaxPacketsPerBatch:
		return nil, nil, fmt.Errorf("amdp: skeleton record: %w: %d packets", ErrTooManyPackets, len(b.Packets))
	case len(rb.Receipts) > len(b.Packets):
		return nil, nil, fmt.Errorf("amdp: skeleton record: %w: %d receipts for %d packets", ErrMalformed, len(rb.Receipts), len(b.Packets))
	}
	for _, p := range b.Packets {
		if p.PipeId == "" {
			return nil, nil, fmt.Errorf("amdp: skeleton record: %w: packet without a pipe", ErrMalformed)
		}
	}
	return b, rb, nil
}
