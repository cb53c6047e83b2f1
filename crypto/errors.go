package crypto

import "errors"

var (
	// ErrBadSignature is returned by Verify when a signature does not verify.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrBadKey is returned for a malformed public or private key.
	ErrBadKey = errors.New("malformed key")
	// ErrUnknownSuite is returned for a suite name ccgp does not implement.
	ErrUnknownSuite = errors.New("unknown signing suite")
	// ErrBadAddress is returned by ParseAddress and AddressFromBytes.
	ErrBadAddress = errors.New("malformed address")
	// ErrKeyNotFound is returned by the keystore for a name it does not hold.
	ErrKeyNotFound = errors.New("key not found")
	// ErrKeyExists is returned by Keystore.Add for a name already taken.
	ErrKeyExists = errors.New("key already exists")
	// ErrWrongPassphrase is returned when a key file does not decrypt.
	ErrWrongPassphrase = errors.New("wrong passphrase or corrupted key file")
	// ErrInsecureKey is returned when a plaintext development key is opened
	// by a keystore that was not told to accept them.
	ErrInsecureKey = errors.New("key is stored unencrypted (development key); pass --insecure-dev-keys to use it")
)
