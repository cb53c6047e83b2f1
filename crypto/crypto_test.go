package crypto

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEd25519SignVerify(t *testing.T) {
	s := DevSigner("alice")
	msg := []byte("hello")
	sig, err := s.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(SuiteEd25519, s.PublicKey(), msg, sig); err != nil {
		t.Fatalf("valid signature rejected: %v", err)
	}
	bad := append([]byte(nil), sig...)
	bad[0] ^= 1
	cases := []struct {
		name      string
		suite     Suite
		pub, sig  []byte
		msg       []byte
		wantErrIs error
	}{
		{"flipped sig", SuiteEd25519, s.PublicKey(), bad, msg, ErrBadSignature},
		{"other msg", SuiteEd25519, s.PublicKey(), sig, []byte("hellp"), ErrBadSignature},
		{"other key", SuiteEd25519, DevSigner("bob").PublicKey(), sig, msg, ErrBadSignature},
		{"short sig", SuiteEd25519, s.PublicKey(), sig[:10], msg, ErrBadSignature},
		{"short key", SuiteEd25519, s.PublicKey()[:5], sig, msg, ErrBadKey},
		{"unknown suite", Suite("rsa"), s.PublicKey(), sig, msg, ErrUnknownSuite},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := Verify(c.suite, c.pub, c.msg, c.sig); !errors.Is(err, c.wantErrIs) {
				t.Fatalf("got %v, want %v", err, c.wantErrIs)
			}
		})
	}
}

func TestAddress(t *testing.T) {
	s := DevSigner("alice")
	a := SignerAddress(s)
	b, err := ParseAddress(a.String())
	if err != nil || a != b {
		t.Fatalf("round trip: %v %v %v", a, b, err)
	}
	if _, err := ParseAddress("0x" + a.String()); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"", "zz", strings.Repeat("g", 40), a.String() + "00"} {
		if _, err := ParseAddress(in); !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseAddress(%q) = %v, want ErrBadAddress", in, err)
		}
	}
	if AddressOf(SuiteEd25519, s.PublicKey()) == AddressOf("other", s.PublicKey()) {
		t.Fatal("suite is not part of the address")
	}
}

func TestKeystoreEncrypted(t *testing.T) {
	dir := t.TempDir()
	ks, err := OpenKeystore(dir, []byte("correct horse"), false)
	if err != nil {
		t.Fatal(err)
	}
	ki, err := ks.Add("alice")
	if err != nil {
		t.Fatal(err)
	}
	if ki.Insecure {
		t.Fatal("encrypted key reported insecure")
	}
	if _, err := ks.Add("alice"); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("duplicate add: %v", err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "alice.json"))
	if strings.Contains(string(raw), "insecure_plain_seed") {
		t.Fatal("seed stored in plaintext")
	}
	s, _, err := ks.Signer("alice")
	if err != nil {
		t.Fatal(err)
	}
	if SignerAddress(s) != ki.Address {
		t.Fatal("address mismatch")
	}
	wrong, _ := OpenKeystore(dir, []byte("wrong"), false)
	if _, _, err := wrong.Signer("alice"); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, _, err := ks.Signer("bob"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := ks.Add("../evil"); err == nil {
		t.Fatal("path traversal name accepted")
	}
	list, err := ks.List()
	if err != nil || len(list) != 1 || list[0].Name != "alice" {
		t.Fatalf("list: %v %v", list, err)
	}
	if _, err := OpenKeystore(dir, nil, false); err == nil {
		t.Fatal("empty passphrase accepted")
	}
}

func TestKeystoreInsecure(t *testing.T) {
	dir := t.TempDir()
	dev, _ := OpenKeystore(dir, nil, true)
	ki, err := dev.Add("dev")
	if err != nil {
		t.Fatal(err)
	}
	if !ki.Insecure {
		t.Fatal("plaintext key not flagged insecure")
	}
	if _, _, err := dev.Signer("dev"); err != nil {
		t.Fatal(err)
	}
	secure, _ := OpenKeystore(dir, []byte("pw"), false)
	if _, _, err := secure.Signer("dev"); !errors.Is(err, ErrInsecureKey) {
		t.Fatalf("secure keystore opened a plaintext key: %v", err)
	}
}
