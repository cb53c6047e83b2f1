package kv

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble"
)

// TestOpen: a small and a hot store both keep what was written across a
// reopen, and prefix seeks (which the hot store's filters need Split for)
// on the hot store find exact keys; a second open of a locked directory is an error.
func TestOpen(t *testing.T) {
	for _, o := range []Options{{}, {Hot: 1 << 20, Log: slog.New(slog.DiscardHandler)}} {
		dir := filepath.Join(t.TempDir(), "db")
		db, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir, o); err == nil {
			t.Fatal("a second open of a locked store succeeded")
		}
		if err := db.Set([]byte("key-1"), []byte("v1"), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if db, err = Open(dir, o); err != nil {
			t.Fatal(err)
		}
		v, closer, err := db.Get([]byte("key-1"))
		if err != nil || !bytes.Equal(v, []byte("v1")) {
			t.Fatalf("hot=%d: key-1 after a reopen: %q %v", o.Hot, v, err)
		}
		closer.Close()
		if o.Hot == 0 {
			db.Close()
			continue // pebble's default comparer has no Split: no prefix seeks
		}
		it, err := db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !it.SeekPrefixGE([]byte("key-1")) || !bytes.Equal(it.Value(), []byte("v1")) {
			t.Fatalf("hot=%d: key-1 not found after a reopen", o.Hot)
		}
		if it.SeekPrefixGE([]byte("key-2")) {
			t.Fatalf("hot=%d: a prefix seek for an absent key found %q", o.Hot, it.Key())
		}
		it.Close()
		db.Close()
	}
}
