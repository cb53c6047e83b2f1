package ingest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Checkpoint stores the height up to which a listener's records are all
// in Kafka. A listener is its only user while it runs.
type Checkpoint interface {
	// Load returns the saved height, or 0 when nothing was saved yet.
	Load() (uint64, error)
	// Save stores height; when it returns nil, the height survives a
	// crash. An error stops the listener.
	Save(height uint64) error
}

// FileCheckpoint is a Checkpoint in one small text file at this path. Save
// replaces the file atomically (temp file, fsync, rename, fsync of the
// directory), so a crash leaves either the old height or the new one.
type FileCheckpoint string

var _ Checkpoint = FileCheckpoint("")

// Load reads the height; a missing file is height 0.
func (f FileCheckpoint) Load() (uint64, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("ingest: read checkpoint: %w", err)
	}
	h, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s does not hold a height: %w", ErrCheckpoint, f, err)
	}
	return h, nil
}

// Save writes height durably.
func (f FileCheckpoint) Save(height uint64) (err error) {
	path := string(f)
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("ingest: save checkpoint: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(strconv.AppendUint(nil, height, 10)); err != nil {
		return fmt.Errorf("ingest: save checkpoint: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("ingest: save checkpoint: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("ingest: save checkpoint: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("ingest: save checkpoint: %w", err)
	}
	// The rename is durable only once the directory is.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("ingest: save checkpoint: %w", err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("ingest: save checkpoint: sync %s: %w", dir, err)
	}
	return nil
}
