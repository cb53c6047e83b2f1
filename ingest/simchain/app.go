package simchain

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// RequestTimeout is how long after sending an App's request may wait for
// delivery before the compensator gives up on it.
const RequestTimeout = 10 * time.Minute

// App is a source application on a simulated chain: it signs requests on
// one pipe with its cross-chain key and submits them in sequence. It is
// safe for concurrent use; its sends are serialized, since a pipe's
// sequences are.
type App struct {
	Chain  *Chain
	Signer crypto.Signer // the app's cross-chain key, as the pipe records it
	Pipe   string
	// Timeout is how long after sending a request may wait for delivery
	// (its timeout_unix_ms); zero is RequestTimeout. Set it before Send.
	Timeout time.Duration

	mu sync.Mutex // serializes Send
}

// Send signs payload as the pipe's next request (operation write, timeout
// Timeout from now) and submits it. If another sender on the same
// pipe took the sequence first, Send signs again with the next one.
func (a *App) Send(ctx context.Context, payload []byte) (*amdp.Packet, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	const tries = 8
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = RequestTimeout
	}
	for range tries {
		p := &amdp.Packet{
			PipeId:        a.Pipe,
			Sequence:      a.Chain.NextSequence(a.Pipe),
			Operation:     amdp.OpWrite,
			Payload:       payload,
			TimeoutUnixMs: uint64(time.Now().Add(timeout).UnixMilli()),
		}
		if err := amdp.SignPacket(p, a.Signer); err != nil {
			return nil, err
		}
		_, err := a.Chain.Submit(ctx, p)
		if errors.Is(err, ErrSequenceReplay) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	return nil, fmt.Errorf("simchain: app on pipe %q: lost the sequence race %d times", a.Pipe, tries)
}
