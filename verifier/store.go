package verifier

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble"
	"google.golang.org/protobuf/proto"

	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// store keeps every batch handed to Enqueue until its check is settled: a
// confirmation or a MANUAL record committed, or nothing to check it
// against. The router commits its offsets once Enqueue returns, so the
// batch is never receipted again: a check still waiting (for its receipt
// anchor, its confirmation's tx) when the relay stops is found here on
// the next start, or the batch would stay DELIVERED and never CONFIRMED.
//
// Key: uvarint(len(from relay)) from relay, be64(batch seq). Value:
// uvarint(len(batch)) batch receipts, both protobuf; the batch is
// stripped to its header's relays and sequence and its packets' pipe ids
// and sequences (a packet's id is a hash of those two), which is all a
// check reads.
type store struct {
	mu     sync.RWMutex // guards closed; held for reading by every use of db
	closed bool
	db     *pebble.DB
}

var errStoreClosed = errors.New("verifier: store closed")

func openStore(dir string) (*store, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quiet{}})
	if err != nil {
		return nil, fmt.Errorf("verifier: open store %s: %w", dir, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("verifier: close store: %w", err)
	}
	return nil
}

func storeKey(from string, seq uint64) []byte {
	k := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(from)+8), uint64(len(from)))
	k = append(k, from...)
	return binary.BigEndian.AppendUint64(k, seq)
}

// put records it, synced: it must outlive a crash once Enqueue returns.
func (s *store) put(it item) error {
	h := it.b.GetHeader()
	sb := &amdp.Batch{Header: &amdp.BatchHeader{FromRelay: h.GetFromRelay(), ToRelay: h.GetToRelay(), BatchSeq: h.GetBatchSeq()},
		Packets: make([]*amdp.Packet, len(it.b.Packets))}
	for i, p := range it.b.Packets {
		sb.Packets[i] = &amdp.Packet{PipeId: p.PipeId, Sequence: p.Sequence}
	}
	det := proto.MarshalOptions{Deterministic: true}
	bb, err := det.Marshal(sb)
	if err != nil {
		return fmt.Errorf("verifier: encode batch %s/%d: %w", h.GetFromRelay(), h.GetBatchSeq(), err)
	}
	v := binary.AppendUvarint(nil, uint64(len(bb)))
	v = append(v, bb...)
	if v, err = det.MarshalAppend(v, it.rb); err != nil {
		return fmt.Errorf("verifier: encode receipts of %s/%d: %w", h.GetFromRelay(), h.GetBatchSeq(), err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errStoreClosed
	}
	if err := s.db.Set(storeKey(h.GetFromRelay(), h.GetBatchSeq()), v, pebble.Sync); err != nil {
		return fmt.Errorf("verifier: record batch %s/%d: %w", h.GetFromRelay(), h.GetBatchSeq(), err)
	}
	return nil
}

// forget drops the record of a settled batch. Not synced: a delete lost
// in a crash only has the batch checked once more (its confirmation is
// then refused as existing, which settles it).
func (s *store) forget(from string, seq uint64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errStoreClosed
	}
	if err := s.db.Delete(storeKey(from, seq), pebble.NoSync); err != nil {
		return fmt.Errorf("verifier: forget batch %s/%d: %w", from, seq, err)
	}
	return nil
}

// all returns the recorded batches, and the keys of the records that do
// not decode (kept, reported by the caller).
func (s *store) all() (items []item, corrupt [][]byte, err error) {
	it, err := s.db.NewIter(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("verifier: scan store: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return nil, nil, fmt.Errorf("verifier: scan store: %w", err)
		}
		r, ok := decodeItem(v)
		if !ok {
			corrupt = append(corrupt, append([]byte(nil), it.Key()...))
			continue
		}
		items = append(items, r)
	}
	if err := it.Close(); err != nil {
		return nil, nil, fmt.Errorf("verifier: scan store: %w", err)
	}
	return items, corrupt, nil
}

func decodeItem(v []byte) (item, bool) {
	n, w := binary.Uvarint(v)
	if w <= 0 || n > uint64(len(v)-w) {
		return item{}, false
	}
	r := item{b: &amdp.Batch{}, rb: &amdp.ReceiptBatch{}}
	if proto.Unmarshal(v[w:w+int(n)], r.b) != nil || proto.Unmarshal(v[w+int(n):], r.rb) != nil ||
		r.b.Header == nil || r.rb.Header == nil {
		return item{}, false
	}
	return r, true
}

// quiet drops pebble's informational chatter.
type quiet struct{}

func (quiet) Infof(string, ...any) {}
func (quiet) Fatalf(format string, args ...any) {
	panic(errors.New("verifier: pebble: " + fmt.Sprintf(format, args...)))
}
