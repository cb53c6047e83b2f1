package mesh

import (
	"errors"
	"fmt"

	"github.com/ccgpmesh/ccgp/mesh/check"
)

// Sentinel errors. Batch and packet rejections wrap one of them (or one of
// package amdp's), so that a caller can branch with errors.Is and a metric
// can count them with Reason.
var (
	// ErrClosed is returned by Send and Run once Close has been called.
	ErrClosed = errors.New("mesh: endpoint closed")
	// ErrBadBatch is returned by Send for a batch it will not send: nil,
	// not from this relay, or not addressed to the relay it is sent to.
	ErrBadBatch = errors.New("batch not sendable from here")

	// ErrUnknownRelay is returned when the registry has no service for a
	// relay: by Send for its destination, and in an AuthError for a peer
	// whose certificate names an unregistered relay.
	ErrUnknownRelay = errors.New("unknown relay")
	// ErrNoRelayKey is returned when a relay's signing key cannot be found
	// in the registry: its service names no account, the account is not
	// registered or not active, or its key does not match its address.
	ErrNoRelayKey = errors.New("no usable relay key")

	// ErrWrongToRelay rejects a received batch whose to_relay is not this
	// relay.
	ErrWrongToRelay = errors.New("batch is addressed to another relay")
	// ErrWrongFromRelay rejects a received batch whose from_relay is not
	// the relay that the TLS handshake authenticated.
	ErrWrongFromRelay = errors.New("batch from_relay is not the authenticated peer")
	// ErrBadFrameOrder rejects a stream that carries anything but one
	// batch frame (a receipt frame, or bytes after the batch).
	ErrBadFrameOrder = errors.New("unexpected frame")

	// ErrAuth is matched (errors.Is) by every AuthError: mutual TLS
	// authentication failed, on either side.
	ErrAuth = errors.New("peer authentication failed")
	// ErrUntrustedCert is an AuthError's reason when the peer's
	// certificate does not chain to the CA, has expired, is not valid for
	// its role, or names no relay.
	ErrUntrustedCert = errors.New("certificate not trusted")
	// ErrRelayMismatch is an AuthError's reason when the certificate of
	// the relay dialled names another relay, or the registry's service
	// record names another relay than the one looked up.
	ErrRelayMismatch = errors.New("certificate names another relay")
	// ErrFingerprintMismatch is an AuthError's reason when the peer's
	// certificate is not the one its service registered on govchain.
	ErrFingerprintMismatch = errors.New("certificate fingerprint does not match the registry")
	// ErrAuthRefused is an AuthError's reason when the peer refused this
	// relay's certificate during the handshake.
	ErrAuthRefused = errors.New("peer refused our certificate")

	// ErrBadReceipts is returned by Send when the peer's receipt batch
	// does not verify: bad signature or root, wrong relays or batch_seq, a
	// receipt for a packet not in the batch, or a packet without receipt.
	ErrBadReceipts = errors.New("receipt batch does not match the batch")

	// ErrBatchRejected is matched by a RemoteError whose peer refused the
	// batch: sending it again unchanged will fail again.
	ErrBatchRejected = errors.New("peer rejected the batch")
	// ErrPeerFailed is matched by a RemoteError whose peer accepted the
	// batch but could not process it now (the destination chain failed,
	// its store failed, it is shutting down). Send the same batch again
	// later: the peer's in-flight markers make the retry safe.
	ErrPeerFailed = errors.New("peer failed to process the batch")

	// ErrDeliver is the reason of a batch that the Deliverer failed; the
	// sender sees a RemoteError matching ErrPeerFailed.
	ErrDeliver = errors.New("delivery failed")
	// ErrStore is the reason of a batch that the dedupe store failed.
	ErrStore = errors.New("dedupe store failed")
	// ErrNotAnchored: a batch with strict-pipe packets whose open-batch
	// anchor is not committed (yet): the sender retries.
	ErrNotAnchored = errors.New("strict batch not anchored")
	// ErrAnchorMismatch: the committed anchor has another root or count.
	ErrAnchorMismatch = errors.New("batch differs from its anchor")
)

// AuthError reports a failed mutual TLS authentication: who the peer
// claimed to be and which check refused it. It matches ErrAuth and its
// Reason with errors.Is.
type AuthError struct {
	Relay  string // relay id the peer's certificate names or was expected to name
	Reason error  // ErrUntrustedCert, ErrUnknownRelay, ErrRelayMismatch, ErrFingerprintMismatch or ErrAuthRefused
	Detail string
}

func (e *AuthError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("mesh: authenticate relay %q: %v", e.Relay, e.Reason)
	}
	return fmt.Sprintf("mesh: authenticate relay %q: %v: %s", e.Relay, e.Reason, e.Detail)
}

func (e *AuthError) Unwrap() error { return e.Reason }

// Is makes every AuthError match ErrAuth.
func (e *AuthError) Is(target error) bool { return target == ErrAuth }

// RemoteError is the error frame a peer answered a batch with. It matches
// ErrBatchRejected or, when Retry is set, ErrPeerFailed.
type RemoteError struct {
	Relay  string // the peer that answered
	Retry  bool   // the failure is the peer's and transient: send again later
	Reason string // the peer's stable label, as its metrics count it
	Detail string // the peer's message, for people
}

func (e *RemoteError) Error() string {
	what := "rejected the batch"
	if e.Retry {
		what = "failed to process the batch"
	}
	return fmt.Sprintf("mesh: relay %s %s: %s: %s", e.Relay, what, e.Reason, e.Detail)
}

func (e *RemoteError) Unwrap() error {
	if e.Retry {
		return ErrPeerFailed
	}
	return ErrBatchRejected
}

// Reason returns a short, stable label for err, for a metric's "reason"
// label and for the reason carried in error frames and REJECTED receipts:
// "" for nil, this package's label when err wraps one of its sentinels
// (an AuthError gives its reason's), package amdp's label otherwise
// (amdp.Reason), which is "other" for anything else.
func Reason(err error) string {
	var re *RemoteError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &re):
		return "remote_" + re.Reason
	case errors.Is(err, ErrUntrustedCert):
		return "untrusted_cert"
	case errors.Is(err, ErrRelayMismatch):
		return "relay_mismatch"
	case errors.Is(err, ErrFingerprintMismatch):
		return "fingerprint_mismatch"
	case errors.Is(err, ErrAuthRefused):
		return "auth_refused"
	case errors.Is(err, ErrUnknownRelay):
		return "unknown_relay"
	case errors.Is(err, ErrNoRelayKey):
		return "no_relay_key"
	case errors.Is(err, ErrWrongToRelay):
		return "wrong_to_relay"
	case errors.Is(err, ErrWrongFromRelay):
		return "wrong_from_relay"
	case errors.Is(err, ErrBadFrameOrder):
		return "unexpected_frame"
	case errors.Is(err, ErrNotAnchored):
		return "not_anchored"
	case errors.Is(err, ErrAnchorMismatch):
		return "anchor_mismatch"
	case errors.Is(err, ErrBadReceipts):
		return "bad_receipts"
	case errors.Is(err, ErrDeliver):
		return "deliver_failed"
	case errors.Is(err, ErrStore):
		return "store_failed"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.Is(err, ErrBadBatch):
		return "bad_batch"
	default:
		return check.Reason(err) // packet verdicts, then amdp's labels
	}
}
