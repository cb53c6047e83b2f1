package mesh

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/quic-go/quic-go"

	"github.com/ccgpmesh/ccgp/crypto"
	"github.com/ccgpmesh/ccgp/govchain"
	"github.com/ccgpmesh/ccgp/ingest/subchain"
	"github.com/ccgpmesh/ccgp/mesh/amdp"
)

// memRegistry is the governance view of a test: real govchain records with
// real keys, held in memory.
type memRegistry struct {
	mu       sync.Mutex
	services map[string]*govchain.Service
	accounts map[crypto.Address]*govchain.Account
	pipes    map[string]*govchain.Pipe
}

func newMemRegistry() *memRegistry {
	return &memRegistry{
		services: make(map[string]*govchain.Service),
		accounts: make(map[crypto.Address]*govchain.Account),
		pipes:    make(map[string]*govchain.Pipe),
	}
}

func (r *memRegistry) Service(id string) (*govchain.Service, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.services[id]
	return s, ok
}

func (r *memRegistry) Account(a crypto.Address) (*govchain.Account, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	acct, ok := r.accounts[a]
	return acct, ok
}

func (r *memRegistry) Revoked(a crypto.Address) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	acct, ok := r.accounts[a]
	return ok && acct.Status == govchain.AccountStatus_ACCOUNT_REVOKED
}

func (r *memRegistry) Pipe(id string) (*govchain.Pipe, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pipes[id]
	return p, ok
}

// update replaces a service record through f, as a govchain tx would.
func (r *memRegistry) updateService(id string, f func(*govchain.Service)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := cloneService(r.services[id])
	f(s)
	r.services[id] = s
}

func cloneService(s *govchain.Service) *govchain.Service {
	return &govchain.Service{RelayId: s.RelayId, Org: s.Org, Address: s.Address,
		TlsCertSha256: s.TlsCertSha256, Account: s.Account, SinceHeight: s.SinceHeight}
}

func (r *memRegistry) addAccount(org string, s crypto.Signer) crypto.Address {
	addr := crypto.SignerAddress(s)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.accounts[addr] = &govchain.Account{Address: addr[:], Org: org, Role: govchain.Role_ROLE_CROSSCHAIN,
		Suite: string(s.Suite()), PublicKey: s.PublicKey(), Status: govchain.AccountStatus_ACCOUNT_ACTIVE}
	return addr
}

func (r *memRegistry) addPipe(p *govchain.Pipe) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pipes[p.Id] = p
}

// memChain is a destination chain in memory: it executes each packet as a
// tx, counts executions per packet id, and can block or fail Deliver.
type memChain struct {
	mu         sync.Mutex
	height     uint64
	done       map[[32]byte]subchain.Delivery
	executions map[[32]byte]int
	calls      int // Deliver calls
	finds      int // FindDelivery calls
	failNext   int // Deliver calls to fail after executing (an ack lost inside the chain)
	reject     map[string]bool

	gate    chan struct{} // when set, Deliver waits for it to close
	entered chan struct{} // when set, Deliver signals here on entry
	delay   time.Duration
}

func newMemChain() *memChain {
	return &memChain{done: make(map[[32]byte]subchain.Delivery), executions: make(map[[32]byte]int), reject: make(map[string]bool)}
}

// set changes the chain's behaviour under its lock, since endpoint
// goroutines read it.
func (c *memChain) set(f func(*memChain)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c)
}

func (c *memChain) Deliver(ctx context.Context, packets []*amdp.Packet) ([]subchain.Delivery, error) {
	c.mu.Lock()
	c.calls++
	gate, entered, delay := c.gate, c.entered, c.delay
	c.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]subchain.Delivery, len(packets))
	for i, p := range packets {
		out[i] = c.executeLocked(p)
	}
	if c.failNext > 0 {
		c.failNext--
		return nil, errors.New("memchain: node unreachable after submitting")
	}
	return out, nil
}

// execute runs p on the chain as a tx, as if a relay had delivered it.
func (c *memChain) execute(p *amdp.Packet) subchain.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.executeLocked(p)
}

func (c *memChain) executeLocked(p *amdp.Packet) subchain.Delivery {
	id := p.ID()
	c.height++
	c.executions[id]++
	var hb [8]byte
	binary.BigEndian.PutUint64(hb[:], c.height)
	tx := sha256.Sum256(append(id[:], hb[:]...))
	d := subchain.Delivery{PacketID: id, Status: amdp.StatusDelivered, TxHash: tx[:], Height: c.height,
		ResultHash: sha256.Sum256(p.Payload)}
	if c.reject[p.PipeId] {
		d.Status, d.ResultHash, d.Reason = amdp.StatusRejected, [32]byte{}, "contract refused"
	}
	c.done[id] = d
	return d
}

func (c *memChain) FindDelivery(ctx context.Context, id [32]byte) (subchain.Delivery, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finds++
	d, ok := c.done[id]
	return d, ok, nil
}

func (c *memChain) execCount(id [32]byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.executions[id]
}

func (c *memChain) counts() (calls, finds, executed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.executions {
		executed += n
	}
	return c.calls, c.finds, executed
}

// testNet is a small consortium: one CA, a registry, relays with keys and
// certificates, pipes between them.
type testNet struct {
	t      testing.TB
	ca     *crypto.CA
	reg    *memRegistry
	relays map[string]*testRelay
	app    *crypto.Ed25519Signer // signs every test packet
	seq    map[string]uint64     // next sequence per pipe
}

type testRelay struct {
	id     string
	signer *crypto.Ed25519Signer
	cert   tls.Certificate
	chain  *memChain
	dir    string // dedupe store
	ep     *Endpoint
}

func newTestNet(t testing.TB, relayIDs ...string) *testNet {
	t.Helper()
	ca, err := crypto.NewDevCA("mesh test CA")
	if err != nil {
		t.Fatal(err)
	}
	n := &testNet{t: t, ca: ca, reg: newMemRegistry(), relays: make(map[string]*testRelay),
		app: crypto.DevSigner("mesh-test-app"), seq: make(map[string]uint64)}
	n.reg.addAccount("org-apps", n.app)
	for _, id := range relayIDs {
		n.addRelay(id)
	}
	return n
}

func (n *testNet) addRelay(id string) *testRelay {
	n.t.Helper()
	cert, err := n.ca.Issue(id, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	r := &testRelay{id: id, signer: crypto.DevSigner("mesh-test-" + id), cert: cert, chain: newMemChain(),
		dir: filepath.Join(n.t.TempDir(), id+"-dedupe")}
	addr := n.reg.addAccount("org-"+id, r.signer)
	fp := crypto.Fingerprint(cert)
	n.reg.mu.Lock()
	n.reg.services[id] = &govchain.Service{RelayId: id, Org: "org-" + id, Address: "127.0.0.1:1",
		TlsCertSha256: fp[:], Account: addr[:], SinceHeight: 1}
	n.reg.mu.Unlock()
	n.relays[id] = r
	return r
}

// addPipe registers an ACTIVE pipe from relay from to relay to, signed by
// the test app key.
func (n *testNet) addPipe(id, from, to string, edit ...func(*govchain.Pipe)) {
	addr := crypto.SignerAddress(n.app)
	p := &govchain.Pipe{
		Id:          id,
		Source:      &govchain.PipeEndpoint{Org: "org-" + from, RelayId: from, Account: addr[:], Suite: string(n.app.Suite()), PublicKey: n.app.PublicKey()},
		Destination: &govchain.PipeEndpoint{Org: "org-" + to, RelayId: to},
		Status:      govchain.PipeStatus_PIPE_ACTIVE,
		Limits:      &govchain.PipeLimits{},
		Mode:        govchain.ConsistencyMode_MODE_OPTIMISTIC,
	}
	for _, f := range edit {
		f(p)
	}
	n.reg.addPipe(p)
}

type epOpt func(*Config)

// start opens relay id's endpoint (receiving, with its memChain), runs
// it, points its service at its address, and closes it at cleanup.
func (n *testNet) start(id string, opts ...epOpt) *Endpoint {
	n.t.Helper()
	r := n.relays[id]
	cfg := Config{
		RelayID:       id,
		ListenAddr:    "127.0.0.1:0",
		Certificate:   r.cert,
		CAs:           n.ca.Pool(),
		Signer:        r.signer,
		Registry:      n.reg,
		Deliverer:     r.chain,
		DedupeDir:     r.dir,
		Logger:        testLogger(n.t),
		DialTimeout:   2 * time.Second,
		MinBackoff:    10 * time.Millisecond,
		MaxBackoff:    200 * time.Millisecond,
		StreamTimeout: 5 * time.Second,
	}
	if r.ep != nil {
		// A restart keeps the address peers know.
		cfg.ListenAddr = r.ep.Addr().String()
	}
	for _, o := range opts {
		o(&cfg)
	}
	ep, err := New(cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	r.ep = ep
	n.reg.updateService(id, func(s *govchain.Service) { s.Address = ep.Addr().String() })
	runEndpoint(n.t, ep)
	return ep
}

// runEndpoint runs ep until the test ends, then closes it and checks that
// Run returned.
func runEndpoint(t testing.TB, ep *Endpoint) {
	done := make(chan error, 1)
	go func() { done <- ep.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := ep.Close(); err != nil {
			t.Errorf("close %s: %v", ep.RelayID(), err)
		}
		select {
		case err := <-done:
			// ErrClosed: Close came before Run started. ErrTransportClosed:
			// a test pulled the socket away to simulate a crash.
			if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, quic.ErrTransportClosed) {
				t.Errorf("run %s: %v", ep.RelayID(), err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("run %s did not return after Close", ep.RelayID())
		}
	})
}

// stop closes relay id's endpoint (it can be started again).
func (n *testNet) stop(id string) {
	n.t.Helper()
	if err := n.relays[id].ep.Close(); err != nil {
		n.t.Fatal(err)
	}
}

// packet returns the next signed packet on pipe.
func (n *testNet) packet(pipe string, payload []byte) *amdp.Packet {
	n.seq[pipe]++
	p := &amdp.Packet{PipeId: pipe, Sequence: n.seq[pipe], Operation: amdp.OpWrite, Payload: payload,
		TimeoutHeight: 1_000_000}
	if err := amdp.SignPacket(p, n.app); err != nil {
		n.t.Fatal(err)
	}
	return p
}

// signedPacket makes a packet with an explicit sequence; unlike packet it
// is safe for concurrent use.
func (n *testNet) signedPacket(pipe string, seq uint64, size int) *amdp.Packet {
	p := &amdp.Packet{PipeId: pipe, Sequence: seq, Operation: amdp.OpWrite, Payload: payload(seq, size),
		TimeoutHeight: 1_000_000}
	if err := amdp.SignPacket(p, n.app); err != nil {
		panic(err) // an in-memory Ed25519 key cannot fail
	}
	return p
}

// batch seals packets into a batch from relay from to relay to.
func (n *testNet) batch(from, to string, seq uint64, packets ...*amdp.Packet) *amdp.Batch {
	n.t.Helper()
	return sealBatch(n.t, n.relays[from].signer, from, to, seq, packets)
}

func sealBatch(t testing.TB, s crypto.Signer, from, to string, seq uint64, packets []*amdp.Packet) *amdp.Batch {
	t.Helper()
	b := &amdp.Batch{Header: &amdp.BatchHeader{FromRelay: from, ToRelay: to, BatchSeq: seq, CreatedUnixMs: uint64(time.Now().UnixMilli())},
		Packets: packets}
	if err := amdp.SealBatch(b, s); err != nil {
		t.Fatal(err)
	}
	return b
}

// packets makes k signed packets on pipe with payloads of size bytes.
func (n *testNet) packets(pipe string, k, size int) []*amdp.Packet {
	out := make([]*amdp.Packet, k)
	for i := range out {
		out[i] = n.packet(pipe, payload(n.seq[pipe]+1, size))
	}
	return out
}

func payload(seq uint64, size int) []byte {
	b := fmt.Appendf(nil, `{"op":"transfer","seq":%d,"memo":"`, seq)
	for len(b) < size-2 {
		b = append(b, byte('a'+len(b)%26))
	}
	return append(b, `"}`...)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// value reads a counter or a counter of a vector.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return float64(m.Histogram.GetSampleCount())
}

func rejected(t *testing.T, ep *Endpoint, reason string) float64 {
	t.Helper()
	return value(t, ep.m.rejected.WithLabelValues(reason))
}
