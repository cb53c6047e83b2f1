package ingest

import "errors"

var (
	// ErrProduce is returned by Listener.Run when Kafka refused or never
	// acknowledged a record (the kgo error is wrapped as well). Nothing
	// was checkpointed at or past the record's height.
	ErrProduce = errors.New("ingest: produce failed")
	// ErrCheckpoint is returned by Listener.Run when its checkpoint could
	// not be loaded or saved, and by FileCheckpoint.Load for a file that
	// does not hold a height.
	ErrCheckpoint = errors.New("ingest: checkpoint")
	// ErrStreamEnded is returned by Listener.Run when the chain ended its
	// block stream before Run's ctx ended (the chain closed or failed;
	// Chain.Err is wrapped as well).
	ErrStreamEnded = errors.New("ingest: block stream ended")
	// ErrRunning is returned by Listener.Run while another Run of the
	// same listener is going: two would both checkpoint.
	ErrRunning = errors.New("ingest: listener already running")
	// ErrConfig is returned by the constructors for a missing or invalid
	// argument or option.
	ErrConfig = errors.New("ingest: invalid configuration")
)
