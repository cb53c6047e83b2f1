package crypto

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCAIssueAndVerify(t *testing.T) {
	ca, err := NewDevCA("test consortium")
	if err != nil {
		t.Fatal(err)
	}
	if ca.Name() != "test consortium" || !ca.Certificate().IsCA {
		t.Fatalf("CA %q, IsCA %v", ca.Name(), ca.Certificate().IsCA)
	}
	if d := ca.Certificate().NotAfter.Sub(ca.Certificate().NotBefore); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Fatalf("CA validity %v, want about a year", d)
	}
	cert, err := ca.Issue("relay-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if leaf.Subject.CommonName != "relay-a" {
		t.Errorf("CN %q", leaf.Subject.CommonName)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("default IP SANs %v", leaf.IPAddresses)
	}
	if leaf.NotAfter.After(ca.Certificate().NotAfter) {
		t.Errorf("leaf outlives its CA")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		id, err := VerifyRelayCert([]*x509.Certificate{leaf}, ca.Pool(), usage)
		if err != nil || id != "relay-a" {
			t.Fatalf("usage %v: id %q, err %v", usage, id, err)
		}
	}
	if fp := Fingerprint(cert); fp != sha256.Sum256(cert.Certificate[0]) || fp == ([32]byte{}) {
		t.Fatalf("fingerprint %x", fp)
	}

	other, err := NewDevCA("another consortium")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyRelayCert([]*x509.Certificate{leaf}, other.Pool(), x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrUntrustedCertificate) {
		t.Fatalf("other CA: %v, want ErrUntrustedCertificate", err)
	}
	if _, err := VerifyRelayCert(nil, ca.Pool(), x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrUntrustedCertificate) {
		t.Fatalf("no chain: %v", err)
	}
}

func TestCAIssueHosts(t *testing.T) {
	ca, err := NewDevCA("hosts")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue("relay.b_2", []string{"relay-b.example.org", "10.0.0.7"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.Leaf.DNSNames; len(got) != 1 || got[0] != "relay-b.example.org" {
		t.Errorf("DNS SANs %v", got)
	}
	if got := cert.Leaf.IPAddresses; len(got) != 1 || !got[0].Equal(net.ParseIP("10.0.0.7")) {
		t.Errorf("IP SANs %v", got)
	}
	if id, err := RelayID(cert.Leaf); err != nil || id != "relay.b_2" {
		t.Fatalf("RelayID %q, %v", id, err)
	}
	for _, bad := range []string{"", "Relay-A", "relay a", "relay/a", string(make([]byte, 200))} {
		if _, err := ca.Issue(bad, nil); !errors.Is(err, ErrBadCertificate) {
			t.Errorf("Issue(%q): %v, want ErrBadCertificate", bad, err)
		}
	}
}

func TestRelayIDRequiresOneURI(t *testing.T) {
	c := &x509.Certificate{}
	if _, err := RelayID(c); !errors.Is(err, ErrBadCertificate) {
		t.Fatalf("no URI: %v", err)
	}
	c.URIs = append(c.URIs, RelayURI("relay-a"), RelayURI("relay-b"))
	if _, err := RelayID(c); !errors.Is(err, ErrBadCertificate) {
		t.Fatalf("two URIs: %v", err)
	}
}

func TestCASaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := NewDevCA("persisted")
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveCA(dir, ca); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, caKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Certificate().Equal(ca.Certificate()) {
		t.Fatal("loaded certificate differs")
	}
	// A leaf issued by the loaded CA verifies against the original's pool.
	cert, err := loaded.Issue("relay-c", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyRelayCert([]*x509.Certificate{cert.Leaf}, ca.Pool(), x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatal(err)
	}

	if err := os.Chmod(filepath.Join(dir, caKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); err == nil {
		t.Fatal("LoadCA accepted a world-readable key")
	}

	// A key that does not match the certificate.
	other, err := NewDevCA("other")
	if err != nil {
		t.Fatal(err)
	}
	otherDir := filepath.Join(t.TempDir(), "other")
	if err := SaveCA(otherDir, other); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(otherDir, caKeyFile), filepath.Join(dir, caKeyFile), 0o600)
	if err := os.Chmod(filepath.Join(dir, caKeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); !errors.Is(err, ErrBadCertificate) {
		t.Fatalf("mismatched key: %v, want ErrBadCertificate", err)
	}
	if _, err := LoadCA(t.TempDir()); err == nil {
		t.Fatal("LoadCA of an empty dir succeeded")
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCAMutualTLS runs a real TLS 1.3 handshake between two issued
// certificates over an in-memory pipe: what mesh does over QUIC.
func TestCAMutualTLS(t *testing.T) {
	ca, err := NewDevCA("mtls")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.Issue("relay-b", nil)
	if err != nil {
		t.Fatal(err)
	}
	cliCert, err := ca.Issue("relay-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := net.Pipe()
	t.Cleanup(func() { c1.Close(); c2.Close() })
	srv := tls.Server(c1, &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{srvCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	})
	cli := tls.Client(c2, &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cliCert},
		RootCAs:      ca.Pool(),
		ServerName:   "127.0.0.1",
	})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	peer := srv.ConnectionState().PeerCertificates
	if id, err := VerifyRelayCert(peer, ca.Pool(), x509.ExtKeyUsageClientAuth); err != nil || id != "relay-a" {
		t.Fatalf("server sees %q, %v", id, err)
	}
}
