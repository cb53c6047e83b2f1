package govchain

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// rpcFront serves a node's TCP RPC address in front of CometBFT, which
// listens on a unix socket behind it. CometBFT's Node.Stop closes its RPC
// listener but not the connections it accepted: HTTP keep-alive and
// websocket clients went on talking to the stopped node (its closed
// stores answered "not found", txs went into a mempool nobody would
// propose from), and after StartNode on the same home they never reached
// the new node. A process that exits closes them; an in-process node that
// stops must too, so the front closes every connection on stop.
type rpcFront struct {
	ln   net.Listener
	sock string // CometBFT's unix socket
	dir  string // removed on close

	mu    sync.Mutex // guards conns, closed
	conns map[net.Conn]struct{}
	done  bool
	wg    sync.WaitGroup
}

// newRPCFront binds addr ("tcp://host:port") and returns the unix socket
// address CometBFT should listen on instead ("unix://...").
func newRPCFront(addr string) (*rpcFront, string, error) {
	ln, err := net.Listen("tcp", strings.TrimPrefix(addr, "tcp://"))
	if err != nil {
		return nil, "", fmt.Errorf("govchain: rpc listen %s: %w", addr, err)
	}
	// A short path: unix socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "ccgp-rpc-")
	if err != nil {
		ln.Close()
		return nil, "", fmt.Errorf("govchain: rpc socket dir: %w", err)
	}
	f := &rpcFront{ln: ln, sock: filepath.Join(dir, "rpc.sock"), dir: dir, conns: map[net.Conn]struct{}{}}
	return f, "unix://" + f.sock, nil
}

// serve accepts until close.
func (f *rpcFront) serve() {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.forward(c)
			}()
		}
	}()
}

func (f *rpcFront) forward(c net.Conn) {
	b, err := net.Dial("unix", f.sock)
	if err != nil {
		c.Close()
		return
	}
	if !f.track(c, b) {
		c.Close()
		b.Close()
		return
	}
	defer f.untrack(c, b)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Half-close is not worth it for HTTP: end both ways.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
}

func (f *rpcFront) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return false
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *rpcFront) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		delete(f.conns, c)
	}
}

// close stops accepting, closes every connection and waits for the
// forwarders.
func (f *rpcFront) close() error {
	f.mu.Lock()
	f.done = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	err := f.ln.Close()
	f.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return errors.Join(err, os.RemoveAll(f.dir))
}
