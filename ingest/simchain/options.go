package simchain

import (
	"fmt"
	"log/slog"
	"time"
)

// Options configures a chain. Zero fields take their defaults.
type Options struct {
	// ID is the subchain id registered on govchain. Required.
	ID string
	// BlockInterval is the time between blocks. Default 50ms.
	BlockInterval time.Duration
	// FinalityDepth is how many blocks must follow a block before it is
	// final: height h is final once the head is at least h+FinalityDepth.
	// Zero means the default 2; a negative value makes a block final as
	// soon as it is committed.
	FinalityDepth int
	// MaxTxsPerBlock bounds the txs in one block. Default 10000.
	MaxTxsPerBlock int
	// MempoolSize bounds the txs waiting for a block; Submit, Deliver and
	// Rollback wait for room when it is full. Default 4 × MaxTxsPerBlock.
	MempoolSize int
	// RejectPrefix is the destination contract's one rule: a delivered
	// packet whose payload starts with it is rejected, deterministically
	// and with a reason. Nil or empty rejects nothing.
	RejectPrefix []byte
	// Logger receives the chain's logs. Default: discarded.
	Logger *slog.Logger
	// Now is the block producer's clock: a block's time is Now, or one
	// millisecond after its parent's when Now is not later, so block
	// times only grow. Packets' timeout_unix_ms are judged by it.
	// Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.ID == "" {
		return o, fmt.Errorf("simchain: options: ID is required")
	}
	if o.BlockInterval <= 0 {
		o.BlockInterval = 50 * time.Millisecond
	}
	switch {
	case o.FinalityDepth == 0:
		o.FinalityDepth = 2
	case o.FinalityDepth < 0:
		o.FinalityDepth = 0
	}
	if o.MaxTxsPerBlock <= 0 {
		o.MaxTxsPerBlock = 10000
	}
	if o.MempoolSize <= 0 {
		o.MempoolSize = 4 * o.MaxTxsPerBlock
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	// A copy, so that the caller changing its slice cannot change the
	// contract under a running chain.
	o.RejectPrefix = append([]byte(nil), o.RejectPrefix...)
	return o, nil
}
