package govchain

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/ccgpmesh/ccgp/crypto"
	"google.golang.org/protobuf/proto"
)

// Key layout of the state tree. One byte of kind, a '/', then the id. Ids
// are checked by validID so they never contain '/', which keeps prefixes of
// different kinds disjoint.
const (
	prefixParams   = "p"
	prefixOrg      = "o/"
	prefixAccount  = "a/"
	prefixProposal = "g/"
	prefixOpenProp = "v/" // v/<deadline be64><id be64>: proposals still voting
	prefixNode     = "n/"
	prefixService  = "s/"
	prefixSubchain = "c/"
	prefixApp      = "x/"
	prefixContract = "k/"
	prefixPipe     = "i/"
	keyNextProp    = "G"
	prefixBatch    = "b/" // b/<from relay>/<batch seq be64>
	prefixLedger   = "l/" // l/<pipe>/<first seq be64>
	prefixThrough  = "w/" // w/<pipe>: the highest sequence anchored
	prefixExcept   = "e/" // e/<pipe>/<seq be64>
	prefixAlias    = "r/" // r/<AddressOf(suite, key)>: the account a key was rotated onto
	prefixApplying = "q/" // q/<applicant address>: its applications still voting (be64)
	keyOpenApps    = "A"  // membership applications still voting (be64)
	// keyChanges holds the registry keys (changeLogPrefixes) that the
	// block of the height it names changed: be64 height, then uvarint
	// length + key for each, sorted. Rewritten only by blocks that change
	// one, so at version h it describes block h only if it names h. Proven
	// like any key, it is how a client learns, from verified state, what to
	// reload (Cache).
	keyChanges = "C"
)

// changeLogPrefixes are the key kinds keyChanges tracks: what the relays'
// governance cache holds.
var changeLogPrefixes = []string{prefixOrg, prefixAccount, prefixService, prefixPipe}

func tracked(key string) bool {
	for _, p := range changeLogPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

func encodeChanges(height uint64, keys []string) []byte {
	sort.Strings(keys)
	b := binary.BigEndian.AppendUint64(nil, height)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	return b
}

// decodeChanges parses a keyChanges value.
func decodeChanges(b []byte) (height uint64, keys [][]byte, err error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("change log: %d bytes", len(b))
	}
	height, b = binary.BigEndian.Uint64(b), b[8:]
	for len(b) > 0 {
		n, w := binary.Uvarint(b)
		if w <= 0 || n == 0 || n > uint64(len(b)-w) {
			return 0, nil, errors.New("change log: bad key length")
		}
		keys = append(keys, b[w:w+int(n)])
		b = b[w+int(n):]
	}
	return height, keys, nil
}

// KeyBatch is the key of a batch anchor.
func KeyBatch(fromRelay string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixBatch+fromRelay+"/"), seq)
}

// KeyLedger is the key of the ledger entry of pipe that starts at first.
func KeyLedger(pipe string, first uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixLedger+pipe+"/"), first)
}

// KeyThrough is the key of the highest sequence of pipe anchored so far.
func KeyThrough(pipe string) []byte { return []byte(prefixThrough + pipe) }

// KeyException is the key of a packet's exception record.
func KeyException(pipe string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixExcept+pipe+"/"), seq)
}

// Keys of single records, exported so that clients can ask for proofs.
func KeyParams() []byte                  { return []byte(prefixParams) }
func KeyOrg(id string) []byte            { return []byte(prefixOrg + id) }
func KeyAccount(a crypto.Address) []byte { return append([]byte(prefixAccount), a[:]...) }
func KeyProposal(id uint64) []byte       { return binary.BigEndian.AppendUint64([]byte(prefixProposal), id) }
func KeyNode(id string) []byte           { return []byte(prefixNode + id) }
func KeyService(id string) []byte        { return []byte(prefixService + id) }
func KeySubchain(id string) []byte       { return []byte(prefixSubchain + id) }
func KeyApp(id string) []byte            { return []byte(prefixApp + id) }
func KeyContract(id string) []byte       { return []byte(prefixContract + id) }
func KeyPipe(id string) []byte           { return []byte(prefixPipe + id) }

// KeyAlias is the key of the record naming the account that a key was
// rotated onto; keyAddr is AddressOf(suite, that key). The value is the
// account's 20-byte address. Aliases are never removed, so no key ever
// serves two accounts.
func KeyAlias(keyAddr crypto.Address) []byte { return append([]byte(prefixAlias), keyAddr[:]...) }

// keyOwner returns the account a key (by its derived address) was rotated
// onto, if any.
func keyOwner(r reader, keyAddr crypto.Address) (crypto.Address, bool, error) {
	b, err := r.Get(KeyAlias(keyAddr))
	if err != nil {
		return crypto.Address{}, false, fmt.Errorf("state: get alias: %w", err)
	}
	if b == nil {
		return crypto.Address{}, false, nil
	}
	a, err := crypto.AddressFromBytes(b)
	if err != nil {
		return crypto.Address{}, false, fmt.Errorf("state: alias of %s: %w", keyAddr, err)
	}
	return a, true, nil
}

func keyApplying(a crypto.Address) []byte { return append([]byte(prefixApplying), a[:]...) }

// counter reads a be64 counter (absent: 0).
func counter(r reader, key []byte) (uint64, error) {
	b, err := r.Get(key)
	if err != nil {
		return 0, fmt.Errorf("state: get %q: %w", key, err)
	}
	if len(b) != 8 {
		return 0, nil
	}
	return binary.BigEndian.Uint64(b), nil
}

// addCounter adds delta to a be64 counter, never below 0; at 0 the key is
// removed, so that counters leave no trace once idle.
func (o *overlay) addCounter(key []byte, delta int64) error {
	n, err := counter(o, key)
	if err != nil {
		return err
	}
	switch {
	case delta >= 0:
		n += uint64(delta)
	case uint64(-delta) >= n:
		n = 0
	default:
		n -= uint64(-delta)
	}
	if n == 0 {
		o.del(key)
		return nil
	}
	o.set(key, binary.BigEndian.AppendUint64(nil, n))
	return nil
}

func keyOpenProp(deadline, id uint64) []byte {
	k := binary.BigEndian.AppendUint64([]byte(prefixOpenProp), deadline)
	return binary.BigEndian.AppendUint64(k, id)
}

// Record prefixes for list queries.
const (
	ListOrgs       = prefixOrg
	ListAccounts   = prefixAccount
	ListProposals  = prefixProposal
	ListNodes      = prefixNode
	ListServices   = prefixService
	ListSubchains  = prefixSubchain
	ListApps       = prefixApp
	ListContracts  = prefixContract
	ListPipes      = prefixPipe
	ListExceptions = prefixExcept
)

// ListLedger is the list prefix of one pipe's ledger.
func ListLedger(pipe string) string { return prefixLedger + pipe + "/" }

// reader is read access to a version of the state.
type reader interface {
	Get(key []byte) ([]byte, error)
}

// writer is the working tree as the state machine needs it.
type writer interface {
	reader
	Set(key, value []byte) (bool, error)
	Remove(key []byte) ([]byte, bool, error)
}

// overlay buffers one tx's writes so that a rejected tx leaves no trace. The
// writes reach the tree in sorted key order: map order must never reach
// consensus state.
type overlay struct {
	base   writer
	writes map[string][]byte // nil value: delete
}

func newOverlay(base writer) *overlay { return &overlay{base: base, writes: map[string][]byte{}} }

func (o *overlay) Get(key []byte) ([]byte, error) {
	if v, ok := o.writes[string(key)]; ok {
		return v, nil
	}
	return o.base.Get(key)
}

func (o *overlay) set(key, value []byte) { o.writes[string(key)] = value }
func (o *overlay) del(key []byte)        { o.writes[string(key)] = nil }

func (o *overlay) flush() error {
	keys := make([]string, 0, len(o.writes))
	for k := range o.writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v := o.writes[k]; v == nil {
			if _, _, err := o.base.Remove([]byte(k)); err != nil {
				return fmt.Errorf("state: remove %q: %w", k, err)
			}
		} else if _, err := o.base.Set([]byte(k), v); err != nil {
			return fmt.Errorf("state: set %q: %w", k, err)
		}
	}
	o.writes = map[string][]byte{}
	return nil
}

var marshal = proto.MarshalOptions{Deterministic: true}

// load decodes the record at key into m; found is false when it is absent.
func load(r reader, key []byte, m proto.Message) (found bool, err error) {
	b, err := r.Get(key)
	if err != nil {
		return false, fmt.Errorf("state: get %q: %w", key, err)
	}
	if b == nil {
		return false, nil
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return false, fmt.Errorf("state: decode %q: %w", key, err)
	}
	return true, nil
}

func (o *overlay) put(key []byte, m proto.Message) error {
	b, err := marshal.Marshal(m)
	if err != nil {
		return fmt.Errorf("state: encode %q: %w", key, err)
	}
	o.set(key, b)
	return nil
}
