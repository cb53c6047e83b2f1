package kv

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"
)

// Corrupt is a stored record that did not decode.
type Corrupt struct {
	Key []byte
	Err error
}

// Scan decodes every record of db in key order. A record that decode
// refuses is not an error of the scan: it is returned in corrupt, and left
// in the store, for a person to decide (its packets are still owed
// something), while the other records are restored; one bad record must
// not strand the rest. err is for the store itself (an iterator that
// failed). decode gets copies it may keep.
func Scan[T any](db *pebble.DB, decode func(key, value []byte) (T, error)) (items []T, corrupt []Corrupt, err error) {
	it, err := db.NewIter(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("kv: scan: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k := append([]byte(nil), it.Key()...)
		v, err := decode(k, append([]byte(nil), it.Value()...))
		if err != nil {
			corrupt = append(corrupt, Corrupt{Key: k, Err: err})
			continue
		}
		items = append(items, v)
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, nil, fmt.Errorf("kv: scan: %w", err)
	}
	return items, corrupt, nil
}
