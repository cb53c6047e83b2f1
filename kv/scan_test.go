package kv

import (
	"errors"
	"log/slog"
	"strconv"
	"testing"

	"github.com/cockroachdb/pebble"
)

// TestScan: a record the decoder refuses is reported with its key and
// its error and left in the store; the others are restored in key order.
func TestScan(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records map[string]string
		items   []int
		corrupt []string
	}{
		{name: "empty store"},
		{name: "all good", records: map[string]string{"a": "1", "b": "2", "c": "3"}, items: []int{1, 2, 3}},
		{name: "one bad among good", records: map[string]string{"a": "1", "b": "x", "c": "3"}, items: []int{1, 3}, corrupt: []string{"b"}},
		{name: "all bad", records: map[string]string{"a": "x", "b": "y"}, corrupt: []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := Open(t.TempDir(), Options{Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			for k, v := range tc.records {
				if err := db.Set([]byte(k), []byte(v), pebble.NoSync); err != nil {
					t.Fatal(err)
				}
			}
			items, corrupt, err := Scan(db, func(_, v []byte) (int, error) { return strconv.Atoi(string(v)) })
			if err != nil {
				t.Fatal(err)
			}
			if len(items) != len(tc.items) {
				t.Fatalf("items %v, want %v", items, tc.items)
			}
			for i := range items {
				if items[i] != tc.items[i] {
					t.Fatalf("items %v, want %v", items, tc.items)
				}
			}
			if len(corrupt) != len(tc.corrupt) {
				t.Fatalf("corrupt %v, want keys %v", corrupt, tc.corrupt)
			}
			for i, c := range corrupt {
				var ne *strconv.NumError
				if string(c.Key) != tc.corrupt[i] || !errors.As(c.Err, &ne) {
					t.Fatalf("corrupt[%d] = %q %v, want key %q with the decoder's error", i, c.Key, c.Err, tc.corrupt[i])
				}
				if _, closer, err := db.Get(c.Key); err != nil {
					t.Fatalf("corrupt record %q gone from the store: %v", c.Key, err)
				} else {
					closer.Close()
				}
			}
		})
	}
}
