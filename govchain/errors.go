package govchain

import (
	"errors"
	"fmt"
)

// Result codes of rejected txs. A rejection is a code plus a sentence, never
// a Go error from the ABCI methods: Go errors mean the infrastructure failed.
// The numbers are part of the chain's behaviour and never change.
const (
	CodeOK            uint32 = 0
	CodeMalformed     uint32 = 1  // bytes do not decode or a field is missing
	CodeTooLarge      uint32 = 2  // tx over Params.MaxTxBytes
	CodeWrongChain    uint32 = 3  // signed for another chain id
	CodeBadSignature  uint32 = 4  // signature does not verify
	CodeUnknownSender uint32 = 5  // sender is not an account on chain
	CodeBadNonce      uint32 = 6  // nonce not above the account's last (replay)
	CodeUnauthorized  uint32 = 7  // sender's role or org may not do this
	CodeNotFound      uint32 = 8  // a referenced record does not exist
	CodeExists        uint32 = 9  // the record already exists
	CodeInvalid       uint32 = 10 // a field has a bad value
	CodeBadState      uint32 = 11 // the record is not in a state that allows this
	CodeDoubleVote    uint32 = 12 // the org already voted on this proposal
	CodeExpired       uint32 = 13 // the proposal's deadline has passed
	CodeStaleKey      uint32 = 14 // the tx's key is not the account's current key (rotated away)
	CodeRevoked       uint32 = 15 // the sending account is revoked (or its org expelled)
	CodeLimit         uint32 = 16 // a bound on free requests (open applications) is reached
)

// TxError is a tx rejection: a result code and the reason in words. Clients
// rebuild it from a tx result, so errors.Is works on both sides of the RPC.
type TxError struct {
	Code uint32
	Msg  string
}

func (e *TxError) Error() string { return e.Msg }

// Is matches another *TxError with the same code, so that
// errors.Is(err, ErrNotFound) holds for every not-found rejection.
func (e *TxError) Is(target error) bool {
	t, ok := target.(*TxError)
	return ok && t.Msg == "" && t.Code == e.Code
}

// Sentinels for errors.Is, one per code.
var (
	ErrMalformed     = &TxError{Code: CodeMalformed}
	ErrTooLarge      = &TxError{Code: CodeTooLarge}
	ErrWrongChain    = &TxError{Code: CodeWrongChain}
	ErrBadSignature  = &TxError{Code: CodeBadSignature}
	ErrUnknownSender = &TxError{Code: CodeUnknownSender}
	ErrBadNonce      = &TxError{Code: CodeBadNonce}
	ErrUnauthorized  = &TxError{Code: CodeUnauthorized}
	ErrNotFound      = &TxError{Code: CodeNotFound}
	ErrExists        = &TxError{Code: CodeExists}
	ErrInvalid       = &TxError{Code: CodeInvalid}
	ErrBadState      = &TxError{Code: CodeBadState}
	ErrDoubleVote    = &TxError{Code: CodeDoubleVote}
	ErrExpired       = &TxError{Code: CodeExpired}
	ErrStaleKey      = &TxError{Code: CodeStaleKey}
	ErrRevoked       = &TxError{Code: CodeRevoked}
	ErrLimit         = &TxError{Code: CodeLimit}
)

func reject(code uint32, format string, args ...any) *TxError {
	return &TxError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// TxErrorFromResult rebuilds the rejection a node reported, or nil for OK.
func TxErrorFromResult(code uint32, log string) error {
	if code == CodeOK {
		return nil
	}
	if log == "" {
		log = fmt.Sprintf("rejected with code %d", code)
	}
	return &TxError{Code: code, Msg: log}
}

// ErrNoRecord is returned by client queries for a key that the chain proves
// absent.
var ErrNoRecord = errors.New("not found")

// ErrProof is returned when a query's proof does not verify against the app
// hash of a committed header.
var ErrProof = errors.New("proof does not verify")

// ErrUntrusted is returned when the node's chain id, a header or a
// validator set does not verify from the client's TrustRoot: the node
// serves another chain, a fork, or forged data.
var ErrUntrusted = errors.New("governance chain does not verify from the trust root")
