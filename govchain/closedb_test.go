package govchain

import (
	"errors"
	"testing"

	dbm "github.com/cometbft/cometbft-db"
)

// TestCloseSafeDB: every use of a store after Close answers instead of
// reaching pebble, which panics on a closed DB (the tx indexer commits a
// batch after the node stopped).
func TestCloseSafeDB(t *testing.T) {
	raw, err := dbm.NewDB("t", dbm.PebbleDBBackend, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &closeSafeDB{DB: raw, id: "t"}
	if err := d.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatalf("set while open: %v", err)
	}
	pending := d.NewBatch() // made while open, committed after Close
	if err := pending.Set([]byte("k2"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	writes := []struct {
		name string
		do   func() error
	}{
		{"Set", func() error { return d.Set([]byte("k"), []byte("v")) }},
		{"SetSync", func() error { return d.SetSync([]byte("k"), []byte("v")) }},
		{"Delete", func() error { return d.Delete([]byte("k")) }},
		{"DeleteSync", func() error { return d.DeleteSync([]byte("k")) }},
		{"batch made before Close, Write", pending.Write},
		{"batch made before Close, WriteSync", pending.WriteSync},
		{"Iterator", func() error { _, err := d.Iterator(nil, nil); return err }},
		{"ReverseIterator", func() error { _, err := d.ReverseIterator(nil, nil); return err }},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			if err := w.do(); !errors.Is(err, errStoreClosed) {
				t.Fatalf("after Close: %v, want errStoreClosed", err)
			}
		})
	}
	if v, err := d.Get([]byte("k")); v != nil || err != nil {
		t.Fatalf("Get after Close = %q, %v; want absent", v, err)
	}
	if ok, err := d.Has([]byte("k")); ok || err != nil {
		t.Fatalf("Has after Close = %v, %v; want absent", ok, err)
	}
}
