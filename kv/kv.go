// Package kv opens the pebble stores that relays and simulated chains keep
// on disk (the delivery record, the compensator's items, the verifier's
// queue, a simulated chain's blocks), with one logger adapter and one set
// of tunings for stores written with random keys at a high rate.
package kv

import (
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
)

// Options tune a store. The zero value is pebble's defaults with the
// logger sent to slog's default handler at debug level.
type Options struct {
	Log *slog.Logger // nil: slog.Default()
	// Hot is the block cache in bytes of a store written with random keys
	// (packet ids) at tens of thousands a second; 0 means a small store
	// with pebble's defaults. A hot store gets memtables of 16 MiB, a
	// deeper L0 and bloom filters: the defaults (4 MiB, 4 files) spent a
	// quarter of a benchmark's CPU in compactions, and most lookups are
	// for keys never written, which the filters answer without reading
	// data blocks.
	Hot int64
}

const memTableSize = 16 << 20

// Open opens (or creates) the store in dir. Only one process may have it
// open: pebble locks the directory.
func Open(dir string, o Options) (*pebble.DB, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	opts := &pebble.Options{Logger: logger{o.Log}}
	if o.Hot > 0 {
		// pebble reserves its memtables' memory in the block cache:
		// without room for two of them besides, nothing would be cached.
		cache := pebble.NewCache(o.Hot + 2*memTableSize)
		defer cache.Unref() // the DB holds its own reference
		// The default comparer with Split defined (a key is its own
		// prefix), which SeekPrefixGE and so the filters need; order and
		// name are unchanged, so existing stores open as before.
		cmp := *pebble.DefaultComparer
		cmp.Split = func(k []byte) int { return len(k) }
		opts.Cache, opts.Comparer = cache, &cmp
		opts.MemTableSize = memTableSize
		opts.L0CompactionThreshold, opts.L0StopWritesThreshold = 8, 32
		opts.LBaseMaxBytes = 256 << 20
		opts.Levels = make([]pebble.LevelOptions, 7)
		for i := range opts.Levels {
			opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
			opts.Levels[i].FilterType = pebble.TableFilter
			opts.Levels[i].TargetFileSize = 8 << 20
		}
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	return db, nil
}

// logger sends pebble's chatter (flushes, compactions) to slog at debug
// level instead of the standard logger.
type logger struct{ log *slog.Logger }

func (l logger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l logger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf is how pebble reports a broken invariant of its own (its default
// exits the process); it must not return, and a panic keeps the stack for
// the report.
func (l logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg, "component", "pebble")
	panic("pebble: " + msg)
}
