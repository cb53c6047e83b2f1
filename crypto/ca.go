package crypto

import (
	"bytes"
	stdcrypto "crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Errors of the certificate authority and of relay certificate checks.
var (
	// ErrBadCertificate is returned for a certificate that cannot be used
	// as a relay's: unparsable, no relay id or more than one, a bad relay
	// id, or a CA key that does not match its certificate.
	ErrBadCertificate = errors.New("bad certificate")
	// ErrUntrustedCertificate is returned by VerifyRelayCert for a chain
	// that does not lead to the trusted CA, has expired, or is not valid
	// for the usage asked (server or client authentication).
	ErrUntrustedCertificate = errors.New("untrusted certificate")
)

// Validity periods. The development CA lives a year; a relay certificate
// never outlives the CA that issued it.
const (
	caValidity   = 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a peer whose clock is a little
	// behind does not refuse a certificate issued a moment ago.
	clockSkew = 5 * time.Minute
)

// File names that SaveCA writes and LoadCA reads.
const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

// relayURIScheme and relayURIHost make a relay's identity in a
// certificate: the URI SAN ccgp://relay/<relay id>. A URI, not a DNS name,
// because the identity is the governance registry's relay id, not a host:
// a relay may move between hosts and keep its id.
const (
	relayURIScheme = "ccgp"
	relayURIHost   = "relay"
	maxRelayIDLen  = 128
)

// CA is a certificate authority for the mutual TLS between relays. This
// one is for development and tests: its key is an in-memory (or 0600 file)
// ECDSA P-256 key; the consortium CA that replaces it keeps its key in the
// KMS. It is safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewDevCA makes a self-signed CA named name (its subject common name),
// valid for one year.
func NewDevCA(name string) (*CA, error) {
	if strings.TrimSpace(name) == "" {
		return nil, fmt.Errorf("crypto: new CA: %w: empty name", ErrBadCertificate)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("crypto: new CA %q: generate key: %w", name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ccgp development CA"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Leaves only: the development CA signs no intermediates.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("crypto: new CA %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("crypto: new CA %q: parse: %w", name, err)
	}
	return &CA{cert: cert, key: key}, nil
}

// Name is the CA's subject common name.
func (ca *CA) Name() string { return ca.cert.Subject.CommonName }

// Certificate returns the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a new pool that trusts this CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Issue makes a certificate for the relay relayID, valid for both server
// and client authentication (a relay dials and is dialled on one
// endpoint). Its identity is the URI SAN ccgp://relay/<relayID> (see
// RelayID), with relayID as the common name too for people reading it.
// hosts become DNS or IP SANs; when there are none, the certificate names
// 127.0.0.1 and ::1, for loopback development. The key is a new ECDSA
// P-256 key, and the certificate expires after a year or with the CA,
// whichever is first.
func (ca *CA) Issue(relayID string, hosts []string) (tls.Certificate, error) {
	if err := checkRelayID(relayID); err != nil {
		return tls.Certificate{}, fmt.Errorf("crypto: issue: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("crypto: issue %s: generate key: %w", relayID, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	notAfter := now.Add(leafValidity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: relayID},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{RelayURI(relayID)},
	}
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "::1"}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("crypto: issue %s: %w", relayID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("crypto: issue %s: parse: %w", relayID, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// Fingerprint is the SHA-256 of cert's leaf certificate (DER): what a
// relay registers on govchain as its Service's tls_cert_sha256. A
// certificate without a leaf has the zero fingerprint.
func Fingerprint(cert tls.Certificate) [32]byte {
	if len(cert.Certificate) == 0 {
		return [32]byte{}
	}
	return sha256.Sum256(cert.Certificate[0])
}

// RelayURI is the URI SAN that names relayID in its certificate:
// ccgp://relay/<relayID>.
func RelayURI(relayID string) *url.URL {
	return &url.URL{Scheme: relayURIScheme, Host: relayURIHost, Path: "/" + relayID}
}

// RelayID returns the relay id that cert names in its one ccgp://relay/
// URI SAN. The common name is not consulted: it is for people, and a SAN
// is what a CA vouches for.
func RelayID(cert *x509.Certificate) (string, error) {
	id := ""
	for _, u := range cert.URIs {
		if u.Scheme != relayURIScheme || u.Host != relayURIHost {
			continue
		}
		if id != "" {
			return "", fmt.Errorf("%w: more than one relay URI", ErrBadCertificate)
		}
		id = strings.TrimPrefix(u.Path, "/")
		if id == "" {
			return "", fmt.Errorf("%w: empty relay id in %s", ErrBadCertificate, u)
		}
	}
	if id == "" {
		return "", fmt.Errorf("%w: no %s://%s/ URI SAN", ErrBadCertificate, relayURIScheme, relayURIHost)
	}
	if err := checkRelayID(id); err != nil {
		return "", err
	}
	return id, nil
}

// VerifyRelayCert checks a peer's certificate chain (leaf first, as TLS
// delivers it) against roots for usage (x509.ExtKeyUsageServerAuth when
// checking the relay one dialled, ExtKeyUsageClientAuth when checking one
// that dialled in) and returns the relay id the leaf names. Host names
// are not checked: a relay is identified by its relay id, which the caller
// then checks against the governance registry.
func VerifyRelayCert(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) (string, error) {
	if len(chain) == 0 {
		return "", fmt.Errorf("%w: no certificate", ErrUntrustedCertificate)
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(opts); err != nil {
		return "", fmt.Errorf("%w: %v", ErrUntrustedCertificate, err)
	}
	return RelayID(chain[0])
}

// SaveCA writes ca to dir as ca.crt (PEM certificate, 0644) and ca.key
// (PEM PKCS #8 private key, 0600), creating dir (0700) if needed.
func SaveCA(dir string, ca *CA) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("crypto: save CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("crypto: save CA: marshal key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(filepath.Join(dir, caKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("crypto: save CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, caCertFile), certPEM, 0o644); err != nil {
		return fmt.Errorf("crypto: save CA: %w", err)
	}
	return nil
}

// LoadCA reads a CA that SaveCA wrote to dir. It refuses a key file that
// group or others may read, and a key that does not match the certificate.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	st, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("crypto: load CA: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("crypto: load CA: %s has mode %v: a CA key must be readable by its owner only (chmod 600)", keyPath, st.Mode().Perm())
	}
	certDER, err := readPEM(certPath, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	keyDER, err := readPEM(keyPath, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("crypto: load CA: %s: %w: %v", certPath, ErrBadCertificate, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("crypto: load CA: %s: %w: not a CA certificate", certPath, ErrBadCertificate)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("crypto: load CA: %s: %w: %v", keyPath, ErrBadKey, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("crypto: load CA: %s: %w: %T is not an ECDSA key", keyPath, ErrBadKey, k)
	}
	if !publicKeysEqual(&key.PublicKey, cert.PublicKey) {
		return nil, fmt.Errorf("crypto: load CA: %w: %s does not match %s", ErrBadCertificate, keyPath, certPath)
	}
	return &CA{cert: cert, key: key}, nil
}

func publicKeysEqual(a *ecdsa.PublicKey, b stdcrypto.PublicKey) bool {
	bk, ok := b.(*ecdsa.PublicKey)
	return ok && a.Equal(bk)
}

func readPEM(path, typ string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("crypto: load CA: %w", err)
	}
	b, rest := pem.Decode(raw)
	if b == nil || b.Type != typ || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("crypto: load CA: %s: %w: want one PEM %q block", path, ErrBadCertificate, typ)
	}
	return b.Bytes, nil
}

// writeFileAtomic writes through a temporary file and a rename, so that a
// crash leaves the old file or the new one, never half of one; the
// temporary file has its final mode from the start, so a key is never
// readable by others, even briefly.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("crypto: certificate serial: %w", err)
	}
	return s, nil
}

// checkRelayID accepts what govchain accepts as a relay id (lower-case
// letters, digits, '.', '_', '-'), with a little slack in length, so that
// every id fits a URI path without escaping.
func checkRelayID(id string) error {
	if id == "" || len(id) > maxRelayIDLen {
		return fmt.Errorf("%w: relay id %q: want 1-%d characters", ErrBadCertificate, id, maxRelayIDLen)
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return fmt.Errorf("%w: relay id %q: use lower-case letters, digits, '.', '_' or '-'", ErrBadCertificate, id)
		}
	}
	return nil
}

// SaveCertificate writes a leaf certificate chain (PEM) and its private
// key (PKCS#8 PEM, mode 0600), e.g. for a relay's relay.crt / relay.key.
func SaveCertificate(certFile, keyFile string, cert tls.Certificate) error {
	var cb []byte
	for _, der := range cert.Certificate {
		cb = append(cb, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return fmt.Errorf("crypto: encode key: %w", err)
	}
	if err := writeFileAtomic(certFile, cb, 0o644); err != nil {
		return err
	}
	return writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// CertificatePEM is the CA's certificate in PEM, for a relay's CA file.
func (ca *CA) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}
