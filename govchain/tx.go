package govchain

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/ccgpmesh/ccgp/crypto"
	"google.golang.org/protobuf/proto"
)

// signDomain separates governance-tx signatures from every other signature a
// key may make (AMDP packets, batches).
const signDomain = "ccgp/govchain/tx/v1\x00"

// rotateDomain separates the new key's proof of possession in a key
// rotation from every other signature, tx signatures included.
const rotateDomain = "ccgp/govchain/rotate-key/v1\x00"

// Bounds checked before anything is allocated from a tx's fields.
const (
	DefaultMaxTxBytes = 64 << 10
	maxSuiteLen       = 32
	maxPubKeyLen      = 4096 // room for ML-DSA-65 (1952 B) and hybrids
	maxSigLen         = 8192 // ML-DSA-65 signatures are 3309 B
)

// SignBytes is what a tx's signature covers.
func SignBytes(body []byte) []byte {
	out := make([]byte, 0, len(signDomain)+len(body))
	return append(append(out, signDomain...), body...)
}

// RotationStatement is what the new key signs in MsgRotateKey: the domain
// tag, the chain id, the account's address, the new suite and public key
// and the nonce of the rotation tx, each variable-length field prefixed by
// its length (big-endian uint32), so no two statements share bytes. The
// nonce makes the proof good for one tx only.
func RotationStatement(chainID string, account crypto.Address, suite string, pub []byte, nonce uint64) []byte {
	out := make([]byte, 0, len(rotateDomain)+len(chainID)+len(account)+len(suite)+len(pub)+24)
	out = append(out, rotateDomain...)
	for _, f := range [][]byte{[]byte(chainID), account[:], []byte(suite), pub} {
		out = binary.BigEndian.AppendUint32(out, uint32(len(f)))
		out = append(out, f...)
	}
	return binary.BigEndian.AppendUint64(out, nonce)
}

// NewRotateKey builds the rotate-key message that moves account to next's
// key, for the rotation tx that will carry nonce: next signs the
// RotationStatement. The tx itself is signed by the account's current key.
func NewRotateKey(chainID string, account crypto.Address, nonce uint64, next crypto.Signer) (*MsgRotateKey, error) {
	suite := string(next.Suite())
	sig, err := next.Sign(RotationStatement(chainID, account, suite, next.PublicKey(), nonce))
	if err != nil {
		return nil, fmt.Errorf("sign rotation statement: %w", err)
	}
	return &MsgRotateKey{NewSuite: suite, NewPublicKey: next.PublicKey(), NewSignature: sig}, nil
}

// NewTx builds and signs a tx carrying msg. For an account whose key was
// rotated, set body.Account to its address first.
func NewTx(s crypto.Signer, chainID string, nonce uint64, body *TxBody) ([]byte, error) {
	body.ChainId, body.Nonce = chainID, nonce
	raw, err := marshal.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode tx body: %w", err)
	}
	sig, err := s.Sign(SignBytes(raw))
	if err != nil {
		return nil, fmt.Errorf("sign tx: %w", err)
	}
	return marshal.Marshal(&Tx{Body: raw, Suite: string(s.Suite()), PublicKey: s.PublicKey(), Signature: sig})
}

// DecodedTx is a tx whose bytes parsed and whose signature verified.
type DecodedTx struct {
	Body *TxBody
	// Sender is the account the tx acts for: TxBody.Account when set, else
	// the address of the signing key. That the key is the account's
	// current key is checked against state, not here.
	Sender crypto.Address
	Suite  string
	PubKey []byte
}

// DecodeTx parses raw, bounds every field, checks the chain id and verifies
// the signature. It returns a *TxError (never panics) for bad input.
func DecodeTx(raw []byte, chainID string, maxBytes int) (*DecodedTx, *TxError) {
	return decodeTx(raw, chainID, maxBytes, nil)
}

// decodeTx is DecodeTx that skips the signature check for txs whose hash
// the cache has seen verify (CheckTx verified it; FinalizeBlock need not
// again). The hash covers every byte, so a cache hit proves the same
// signature over the same body.
func decodeTx(raw []byte, chainID string, maxBytes int, verified *sigCache) (*DecodedTx, *TxError) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxTxBytes
	}
	if len(raw) > maxBytes {
		return nil, reject(CodeTooLarge, "tx is %d bytes; the limit is %d", len(raw), maxBytes)
	}
	var tx Tx
	if err := proto.Unmarshal(raw, &tx); err != nil {
		return nil, reject(CodeMalformed, "tx bytes do not decode: %v", err)
	}
	switch {
	case len(tx.Body) == 0:
		return nil, reject(CodeMalformed, "tx has no body")
	case len(tx.Suite) == 0 || len(tx.Suite) > maxSuiteLen:
		return nil, reject(CodeMalformed, "tx suite must be 1-%d bytes", maxSuiteLen)
	case len(tx.PublicKey) == 0 || len(tx.PublicKey) > maxPubKeyLen:
		return nil, reject(CodeMalformed, "tx public key must be 1-%d bytes", maxPubKeyLen)
	case len(tx.Signature) == 0 || len(tx.Signature) > maxSigLen:
		return nil, reject(CodeMalformed, "tx signature must be 1-%d bytes", maxSigLen)
	}
	var body TxBody
	if err := proto.Unmarshal(tx.Body, &body); err != nil {
		return nil, reject(CodeMalformed, "tx body does not decode: %v", err)
	}
	if body.Msg == nil {
		return nil, reject(CodeMalformed, "tx carries no message")
	}
	if body.ChainId != chainID {
		return nil, reject(CodeWrongChain, "tx is for chain %q, this is %q", body.ChainId, chainID)
	}
	if body.Nonce == 0 {
		return nil, reject(CodeBadNonce, "tx nonce must be at least 1")
	}
	suite := crypto.Suite(tx.Suite)
	var h [32]byte
	if verified != nil {
		h = sha256.Sum256(raw)
	}
	if verified == nil || !verified.has(h) {
		if err := crypto.Verify(suite, tx.PublicKey, SignBytes(tx.Body), tx.Signature); err != nil {
			return nil, reject(CodeBadSignature, "%s: %v", MsgName(&body), err)
		}
		if verified != nil {
			verified.add(h)
		}
	}
	sender := crypto.AddressOf(suite, tx.PublicKey)
	if len(body.Account) != 0 {
		a, err := crypto.AddressFromBytes(body.Account)
		if err != nil {
			return nil, reject(CodeMalformed, "%s: tx account: %v", MsgName(&body), err)
		}
		sender = a
	}
	return &DecodedTx{Body: &body, Sender: sender, Suite: tx.Suite, PubKey: tx.PublicKey}, nil
}

// Wrap puts a message into a tx body. It panics on a type that is not a
// governance message: that is a programming error, not input.
func Wrap(m proto.Message) *TxBody {
	b := &TxBody{}
	switch m := m.(type) {
	case *MsgApplyOrg:
		b.Msg = &TxBody_ApplyOrg{ApplyOrg: m}
	case *MsgVote:
		b.Msg = &TxBody_Vote{Vote: m}
	case *MsgProposeAccount:
		b.Msg = &TxBody_ProposeAccount{ProposeAccount: m}
	case *MsgRegisterNode:
		b.Msg = &TxBody_RegisterNode{RegisterNode: m}
	case *MsgRegisterService:
		b.Msg = &TxBody_RegisterService{RegisterService: m}
	case *MsgRegisterSubchain:
		b.Msg = &TxBody_RegisterSubchain{RegisterSubchain: m}
	case *MsgRegisterApp:
		b.Msg = &TxBody_RegisterApp{RegisterApp: m}
	case *MsgRegisterContract:
		b.Msg = &TxBody_RegisterContract{RegisterContract: m}
	case *MsgApplyPipe:
		b.Msg = &TxBody_ApplyPipe{ApplyPipe: m}
	case *MsgAuthorizePipe:
		b.Msg = &TxBody_AuthorizePipe{AuthorizePipe: m}
	case *MsgSuspendPipe:
		b.Msg = &TxBody_SuspendPipe{SuspendPipe: m}
	case *MsgResumePipe:
		b.Msg = &TxBody_ResumePipe{ResumePipe: m}
	case *MsgProposePipeMode:
		b.Msg = &TxBody_ProposePipeMode{ProposePipeMode: m}
	case *MsgOpenBatches:
		b.Msg = &TxBody_OpenBatches{OpenBatches: m}
	case *MsgAnchorReceipts:
		b.Msg = &TxBody_AnchorReceipts{AnchorReceipts: m}
	case *MsgConfirmBatches:
		b.Msg = &TxBody_ConfirmBatches{ConfirmBatches: m}
	case *MsgTxException:
		b.Msg = &TxBody_TxException{TxException: m}
	case *MsgResolve:
		b.Msg = &TxBody_Resolve{Resolve: m}
	case *MsgRevokeAccount:
		b.Msg = &TxBody_RevokeAccount{RevokeAccount: m}
	case *MsgProposeExpelOrg:
		b.Msg = &TxBody_ProposeExpelOrg{ProposeExpelOrg: m}
	case *MsgRotateKey:
		b.Msg = &TxBody_RotateKey{RotateKey: m}
	case *MsgUpdateService:
		b.Msg = &TxBody_UpdateService{UpdateService: m}
	case *MsgReportCredit:
		b.Msg = &TxBody_ReportCredit{ReportCredit: m}
	default:
		panic(fmt.Sprintf("govchain.Wrap: %T is not a governance message", m))
	}
	return b
}

// sigCache remembers the hashes of txs whose signatures verified, bounded
// to sigCacheSize entries (oldest evicted first).
type sigCache struct {
	mu    sync.Mutex // guards the following
	set   map[[32]byte]struct{}
	order [][32]byte
	next  int
}

const sigCacheSize = 200_000

func newSigCache() *sigCache { return &sigCache{set: make(map[[32]byte]struct{})} }

func (c *sigCache) has(h [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.set[h]
	return ok
}

func (c *sigCache) add(h [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.set[h]; ok {
		return
	}
	if len(c.order) < sigCacheSize {
		c.order = append(c.order, h)
	} else {
		delete(c.set, c.order[c.next])
		c.order[c.next] = h
		c.next = (c.next + 1) % sigCacheSize
	}
	c.set[h] = struct{}{}
}
