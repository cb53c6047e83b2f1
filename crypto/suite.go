package crypto

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// Suite names a signing suite. The string is part of every address and of
// every signed record, so it never changes once released.
type Suite string

// SuiteEd25519 is the default suite: RFC 8032 Ed25519.
const SuiteEd25519 Suite = "ed25519"

// Signer signs messages with one private key. Implementations must be safe
// for concurrent use.
type Signer interface {
	Suite() Suite
	PublicKey() []byte
	Sign(msg []byte) ([]byte, error)
}

// Verifier checks signatures of one suite. Verify returns nil for a valid
// signature and an error wrapping ErrBadSignature or ErrBadKey otherwise.
type Verifier interface {
	Verify(pub, msg, sig []byte) error
}

// VerifierFor returns the verifier of suite s.
func VerifierFor(s Suite) (Verifier, error) {
	switch s {
	case SuiteEd25519:
		return ed25519Verifier{}, nil
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownSuite, string(s))
	}
}

// Verify checks sig over msg by pub under suite s.
func Verify(s Suite, pub, msg, sig []byte) error {
	v, err := VerifierFor(s)
	if err != nil {
		return err
	}
	return v.Verify(pub, msg, sig)
}

// ValidatePublicKey reports whether pub is well formed for suite s.
func ValidatePublicKey(s Suite, pub []byte) error {
	switch s {
	case SuiteEd25519:
		if len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: ed25519 public key is %d bytes, want %d", ErrBadKey, len(pub), ed25519.PublicKeySize)
		}
		return nil
	default:
		return fmt.Errorf("%w: %q", ErrUnknownSuite, string(s))
	}
}

type ed25519Verifier struct{}

func (ed25519Verifier) Verify(pub, msg, sig []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: ed25519 public key is %d bytes", ErrBadKey, len(pub))
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: ed25519 signature is %d bytes", ErrBadSignature, len(sig))
	}
	if !ed25519.Verify(ed25519.PublicKey(pub), msg, sig) {
		return ErrBadSignature
	}
	return nil
}

// Ed25519Signer is a Signer over an in-memory Ed25519 private key.
type Ed25519Signer struct {
	priv ed25519.PrivateKey
	pub  []byte
}

// GenerateEd25519 makes a new key from r (crypto/rand when r is nil).
func GenerateEd25519(r io.Reader) (*Ed25519Signer, error) {
	if r == nil {
		r = rand.Reader
	}
	pub, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return &Ed25519Signer{priv: priv, pub: pub}, nil
}

// NewEd25519FromSeed derives a key from a 32-byte seed. Deterministic keys
// are for tests and development networks only.
func NewEd25519FromSeed(seed []byte) (*Ed25519Signer, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: ed25519 seed is %d bytes, want %d", ErrBadKey, len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return &Ed25519Signer{priv: priv, pub: priv.Public().(ed25519.PublicKey)}, nil
}

// DevSigner derives a deterministic Ed25519 key from a name. It exists so
// that demos and tests can rebuild the same consortium; never use it for a
// key that protects anything.
func DevSigner(name string) *Ed25519Signer {
	seed := sha256.Sum256([]byte("ccgp/dev-key/v1/" + name))
	s, _ := NewEd25519FromSeed(seed[:]) // seed length is fixed: cannot fail
	return s
}

func (s *Ed25519Signer) Suite() Suite                    { return SuiteEd25519 }
func (s *Ed25519Signer) PublicKey() []byte               { return s.pub }
func (s *Ed25519Signer) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.priv, msg), nil }
func (s *Ed25519Signer) seed() []byte                    { return s.priv.Seed() }

// AddressLen is the length of an address in bytes.
const AddressLen = 20

// Address identifies an account: the hash of its suite and public key.
type Address [AddressLen]byte

// AddressOf derives the address of pub under suite s.
func AddressOf(s Suite, pub []byte) Address {
	h := sha256.New()
	h.Write([]byte(s))
	h.Write([]byte{0})
	h.Write(pub)
	var a Address
	copy(a[:], h.Sum(nil))
	return a
}

// SignerAddress is AddressOf(s.Suite(), s.PublicKey()).
func SignerAddress(s Signer) Address { return AddressOf(s.Suite(), s.PublicKey()) }

// String renders the address as 40 lower-case hex digits.
func (a Address) String() string { return hex.EncodeToString(a[:]) }

// IsZero reports whether a is the zero address.
func (a Address) IsZero() bool { return a == Address{} }

// ParseAddress parses 40 hex digits (an optional 0x prefix is accepted).
func ParseAddress(s string) (Address, error) {
	var a Address
	s = strings.TrimPrefix(strings.TrimSpace(s), "0x")
	if len(s) != 2*AddressLen {
		return a, fmt.Errorf("%w: %q is %d hex digits, want %d", ErrBadAddress, s, len(s), 2*AddressLen)
	}
	if _, err := hex.Decode(a[:], []byte(s)); err != nil {
		return a, fmt.Errorf("%w: %q: %v", ErrBadAddress, s, err)
	}
	return a, nil
}

// AddressFromBytes converts a 20-byte slice to an Address.
func AddressFromBytes(b []byte) (Address, error) {
	var a Address
	if len(b) != AddressLen {
		return a, fmt.Errorf("%w: %d bytes, want %d", ErrBadAddress, len(b), AddressLen)
	}
	copy(a[:], b)
	return a, nil
}
