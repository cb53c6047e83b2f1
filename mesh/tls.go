package mesh

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/ccgpmesh/ccgp/crypto"
)

// Both sides verify the peer's certificate themselves, in VerifyConnection,
// rather than leaving the chain to crypto/tls: the identity that matters
// is a relay id checked against the governance registry, not a host name,
// and doing every check in one place lets each refusal be typed, counted
// and logged. VerifyConnection runs at the end of the handshake, so a
// refused peer never gets a connection.

// serverTLS is the TLS configuration for relays dialling in. It asks for a
// client certificate and authenticates it as a relay's.
func (e *Endpoint) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{e.cfg.Certificate},
		NextProtos:   []string{ALPN},
		// The chain is verified in VerifyConnection, against CAs.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if _, err := e.authenticate(cs, x509.ExtKeyUsageClientAuth, ""); err != nil {
				e.m.rejected.WithLabelValues(Reason(err)).Inc()
				e.handshakeRefused(err)
				e.log.Warn("refused a relay's handshake", "err", err)
				return err
			}
			return nil
		},
	}
}

// clientTLS is the TLS configuration for dialling the relay to. A failed
// check is also stored in failed, since quic-go reports it to the dialler
// only as a TLS alert.
func (e *Endpoint) clientTLS(to string, failed *authResult) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{e.cfg.Certificate},
		NextProtos:   []string{ALPN},
		// Not insecure: VerifyConnection checks the chain against CAs
		// and the relay's identity against the registry. Host names are
		// not a relay's identity, so crypto/tls's check is off.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := e.authenticate(cs, x509.ExtKeyUsageServerAuth, to)
			failed.set(err)
			return err
		},
	}
}

// authenticate checks a peer's certificate: it chains to CAs and is valid
// for usage, names a relay (want, when dialling want), and that relay has
// a service in the registry whose fingerprint, when one is registered, is
// this certificate's. It returns the relay id.
func (e *Endpoint) authenticate(cs tls.ConnectionState, usage x509.ExtKeyUsage, want string) (string, error) {
	fail := func(relay string, reason error, format string, args ...any) (string, error) {
		return "", &AuthError{Relay: relay, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	if cs.NegotiatedProtocol != ALPN {
		return fail(want, ErrUntrustedCert, "application protocol %q, want %q", cs.NegotiatedProtocol, ALPN)
	}
	id, err := crypto.VerifyRelayCert(cs.PeerCertificates, e.cfg.CAs, usage)
	if err != nil {
		claimed := want
		if len(cs.PeerCertificates) > 0 {
			if c, cerr := crypto.RelayID(cs.PeerCertificates[0]); cerr == nil {
				claimed = c
			}
		}
		return fail(claimed, ErrUntrustedCert, "%v", err)
	}
	if want != "" && id != want {
		return fail(want, ErrRelayMismatch, "dialled %s, its certificate names %s", want, id)
	}
	svc, ok := e.cfg.Registry.Service(id)
	if !ok {
		return fail(id, ErrUnknownRelay, "no service registered")
	}
	if svc.GetRelayId() != id {
		return fail(id, ErrRelayMismatch, "the registry's service record names %q", svc.GetRelayId())
	}
	if reg := svc.GetTlsCertSha256(); len(reg) > 0 {
		if fp := sha256.Sum256(cs.PeerCertificates[0].Raw); !bytes.Equal(fp[:], reg) {
			return fail(id, ErrFingerprintMismatch, "certificate %x, registered %x", fp[:8], reg[:min(8, len(reg))])
		}
	}
	return id, nil
}

// peerRelayID returns the relay id of an accepted connection's peer, which
// serverTLS has authenticated.
func peerRelayID(conn *quic.Conn) (string, error) {
	certs := conn.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("mesh: accepted connection without a peer certificate")
	}
	return crypto.RelayID(certs[0])
}

// authResult carries a dialler's VerifyConnection verdict from the
// handshake back to the dial.
type authResult struct {
	mu  sync.Mutex
	err error
}

func (a *authResult) set(err error) {
	a.mu.Lock()
	a.err = err
	a.mu.Unlock()
}

func (a *authResult) get() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// refusedByPeer turns the TLS alert of a peer that refused our certificate
// into an AuthError, and reports whether err was one. In TLS 1.3 the
// server checks the client's certificate after the client has finished
// its handshake, so the refusal can arrive on the first stream as well as
// from the dial.
//
// A peer that revalidated the connection and found this relay no longer
// authenticates (revoked, expelled, certificate changed) closes it with
// connRevoked: that is a refusal too, not a transport failure to retry.
func refusedByPeer(err error, to string) (*AuthError, bool) {
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && te.ErrorCode.IsCryptoError() {
		return &AuthError{Relay: to, Reason: ErrAuthRefused, Detail: te.Error()}, true
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == connRevoked {
		return &AuthError{Relay: to, Reason: ErrAuthRefused, Detail: "the peer closed the connection: " + ae.ErrorMessage}, true
	}
	return nil, false
}
