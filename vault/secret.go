package vault

import (
	"fmt"
	"io"
	"log/slog"
)

const redacted = "[REDACTED]"

// Secret is a decrypted secret value. It cannot print itself: every fmt verb,
// slog and encoding/json render it as [REDACTED].
//
// The plaintext sits behind a pointer so that even a Secret held in an
// unexported struct field, which fmt prints by reflection without calling
// Format, shows only an address and never the bytes.
type Secret struct {
	b *[]byte
}

func newSecret(b []byte) Secret { return Secret{b: &b} }

// Bytes returns the plaintext. Callers must not log, print or keep it, and
// must not modify it while others hold the same Secret.
func (s Secret) Bytes() []byte {
	if s.b == nil {
		return nil
	}
	return *s.b
}

// String returns "[REDACTED]".
func (s Secret) String() string { return redacted }

// GoString returns "[REDACTED]", so %#v does not reveal the value.
func (s Secret) GoString() string { return redacted }

// Format writes "[REDACTED]" for every verb and flag (%v, %+v, %#v, %s, %q, %x, %d, ...).
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue returns "[REDACTED]", so slog handlers never see the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON returns the JSON string "[REDACTED]".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[REDACTED]", for encoders that prefer text (YAML, XML, map keys).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
