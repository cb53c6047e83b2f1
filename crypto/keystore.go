package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Keystore keeps named private keys in one directory, one JSON file each.
//
// Keys are encrypted at rest with AES-256-GCM under a key derived from a
// passphrase by Argon2id. A keystore opened in insecure mode writes and reads
// plaintext development keys instead; callers must say so to the user every
// time such a key is used (KeyInfo.Insecure tells them).
type Keystore struct {
	dir        string
	passphrase []byte
	insecure   bool
}

// KeyInfo is the public part of a stored key.
type KeyInfo struct {
	Name      string  `json:"name"`
	Suite     Suite   `json:"suite"`
	Address   Address `json:"-"`
	PublicKey []byte  `json:"public_key"`
	Insecure  bool    `json:"insecure"`
}

// keyFile is the on-disk format (version 1).
type keyFile struct {
	Version   int    `json:"version"`
	Name      string `json:"name"`
	Suite     Suite  `json:"suite"`
	Address   string `json:"address"`
	PublicKey []byte `json:"public_key"`
	// Exactly one of Sealed and PlainSeed is set.
	Sealed    *sealed `json:"sealed,omitempty"`
	PlainSeed []byte  `json:"insecure_plain_seed,omitempty"`
}

type sealed struct {
	KDF        string `json:"kdf"` // "argon2id"
	Time       uint32 `json:"time"`
	MemoryKiB  uint32 `json:"memory_kib"`
	Threads    uint8  `json:"threads"`
	Salt       []byte `json:"salt"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// Argon2id parameters: RFC 9106's second recommended option, ~60 ms here.
const (
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 4
)

var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// OpenKeystore opens (creating if needed) the keystore in dir. With insecure
// false, passphrase must not be empty.
func OpenKeystore(dir string, passphrase []byte, insecure bool) (*Keystore, error) {
	if !insecure && len(passphrase) == 0 {
		return nil, errors.New("keystore: a passphrase is required (or use insecure development keys)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	return &Keystore{dir: dir, passphrase: passphrase, insecure: insecure}, nil
}

// Dir is the directory the keystore lives in.
func (k *Keystore) Dir() string { return k.dir }

func (k *Keystore) path(name string) string { return filepath.Join(k.dir, name+".json") }

// ValidateKeyName reports whether name may name a key.
func ValidateKeyName(name string) error {
	if !keyNameRE.MatchString(name) {
		return fmt.Errorf("key name %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// Add generates a new Ed25519 key under name.
func (k *Keystore) Add(name string) (KeyInfo, error) {
	s, err := GenerateEd25519(nil)
	if err != nil {
		return KeyInfo{}, err
	}
	return k.Import(name, s)
}

// Import stores an existing Ed25519 signer under name.
func (k *Keystore) Import(name string, s *Ed25519Signer) (KeyInfo, error) {
	if err := ValidateKeyName(name); err != nil {
		return KeyInfo{}, err
	}
	if _, err := os.Stat(k.path(name)); err == nil {
		return KeyInfo{}, fmt.Errorf("%w: %q in %s", ErrKeyExists, name, k.dir)
	}
	f := keyFile{
		Version:   1,
		Name:      name,
		Suite:     s.Suite(),
		Address:   SignerAddress(s).String(),
		PublicKey: s.PublicKey(),
	}
	if k.insecure {
		f.PlainSeed = s.seed()
	} else {
		sl, err := seal(k.passphrase, s.seed())
		if err != nil {
			return KeyInfo{}, err
		}
		f.Sealed = sl
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return KeyInfo{}, fmt.Errorf("keystore: encode %q: %w", name, err)
	}
	// O_EXCL so two concurrent adds of one name cannot both succeed.
	fh, err := os.OpenFile(k.path(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return KeyInfo{}, fmt.Errorf("%w: %q in %s", ErrKeyExists, name, k.dir)
		}
		return KeyInfo{}, fmt.Errorf("keystore: %w", err)
	}
	if _, err := fh.Write(append(b, '\n')); err != nil {
		fh.Close()
		return KeyInfo{}, fmt.Errorf("keystore: write %q: %w", name, err)
	}
	if err := fh.Close(); err != nil {
		return KeyInfo{}, fmt.Errorf("keystore: write %q: %w", name, err)
	}
	return info(f)
}

func info(f keyFile) (KeyInfo, error) {
	a, err := ParseAddress(f.Address)
	if err != nil {
		return KeyInfo{}, fmt.Errorf("keystore: key %q: %w", f.Name, err)
	}
	if err := ValidatePublicKey(f.Suite, f.PublicKey); err != nil {
		return KeyInfo{}, fmt.Errorf("keystore: key %q: %w", f.Name, err)
	}
	if AddressOf(f.Suite, f.PublicKey) != a {
		return KeyInfo{}, fmt.Errorf("keystore: key %q: address does not match its public key", f.Name)
	}
	return KeyInfo{Name: f.Name, Suite: f.Suite, Address: a, PublicKey: f.PublicKey, Insecure: f.PlainSeed != nil}, nil
}

func (k *Keystore) read(name string) (keyFile, error) {
	var f keyFile
	if err := ValidateKeyName(name); err != nil {
		return f, err
	}
	b, err := os.ReadFile(k.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return f, fmt.Errorf("%w: %q in %s", ErrKeyNotFound, name, k.dir)
	}
	if err != nil {
		return f, fmt.Errorf("keystore: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("keystore: key file %s: %w", k.path(name), err)
	}
	if f.Version != 1 {
		return f, fmt.Errorf("keystore: key file %s: unsupported version %d", k.path(name), f.Version)
	}
	return f, nil
}

// Show returns the public part of the key called name.
func (k *Keystore) Show(name string) (KeyInfo, error) {
	f, err := k.read(name)
	if err != nil {
		return KeyInfo{}, err
	}
	return info(f)
}

// List returns every key in the keystore, sorted by name. A file that does
// not parse is reported as an error rather than skipped.
func (k *Keystore) List() ([]KeyInfo, error) {
	ents, err := os.ReadDir(k.dir)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	var out []KeyInfo
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		ki, err := k.Show(strings.TrimSuffix(e.Name(), ".json"))
		if err != nil {
			return nil, err
		}
		out = append(out, ki)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Signer decrypts and returns the key called name.
func (k *Keystore) Signer(name string) (Signer, KeyInfo, error) {
	f, err := k.read(name)
	if err != nil {
		return nil, KeyInfo{}, err
	}
	ki, err := info(f)
	if err != nil {
		return nil, KeyInfo{}, err
	}
	var seed []byte
	switch {
	case f.PlainSeed != nil:
		if !k.insecure {
			return nil, ki, fmt.Errorf("%q: %w", name, ErrInsecureKey)
		}
		seed = f.PlainSeed
	case f.Sealed != nil:
		if len(k.passphrase) == 0 {
			return nil, ki, fmt.Errorf("%q is encrypted: a passphrase is required", name)
		}
		seed, err = unseal(k.passphrase, f.Sealed)
		if err != nil {
			return nil, ki, fmt.Errorf("%q: %w", name, err)
		}
	default:
		return nil, ki, fmt.Errorf("keystore: key file for %q holds no key", name)
	}
	if f.Suite != SuiteEd25519 {
		return nil, ki, fmt.Errorf("%w: %q", ErrUnknownSuite, f.Suite)
	}
	s, err := NewEd25519FromSeed(seed)
	if err != nil {
		return nil, ki, err
	}
	if SignerAddress(s) != ki.Address {
		return nil, ki, fmt.Errorf("keystore: key %q: private key does not match its address", name)
	}
	return s, ki, nil
}

func seal(pass, secret []byte) (*sealed, error) {
	sl := &sealed{KDF: "argon2id", Time: argonTime, MemoryKiB: argonMemory, Threads: argonThreads,
		Salt: make([]byte, 16), Nonce: make([]byte, 12)}
	if _, err := rand.Read(sl.Salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(sl.Nonce); err != nil {
		return nil, err
	}
	aead, err := sealAEAD(pass, sl)
	if err != nil {
		return nil, err
	}
	sl.Ciphertext = aead.Seal(nil, sl.Nonce, secret, []byte("ccgp/keystore/v1"))
	return sl, nil
}

func unseal(pass []byte, sl *sealed) ([]byte, error) {
	if sl.KDF != "argon2id" {
		return nil, fmt.Errorf("keystore: unsupported kdf %q", sl.KDF)
	}
	// Bound the work a crafted key file can ask of us.
	if sl.Time == 0 || sl.Time > 16 || sl.MemoryKiB == 0 || sl.MemoryKiB > 1<<20 || sl.Threads == 0 || len(sl.Nonce) != 12 {
		return nil, errors.New("keystore: key file has out-of-range kdf parameters")
	}
	aead, err := sealAEAD(pass, sl)
	if err != nil {
		return nil, err
	}
	out, err := aead.Open(nil, sl.Nonce, sl.Ciphertext, []byte("ccgp/keystore/v1"))
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	return out, nil
}

func sealAEAD(pass []byte, sl *sealed) (cipher.AEAD, error) {
	key := argon2.IDKey(pass, sl.Salt, sl.Time, sl.MemoryKiB, sl.Threads, 32)
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}
