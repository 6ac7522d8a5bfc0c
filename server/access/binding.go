package access

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/keyhole-dev/keyhole/tools"
)

// canonicalForm is what a request's hash covers: everything the call
// sends, the body by its hash. Its JSON encoding is deterministic.
type canonicalForm struct {
	V                 int           `json:"v"`
	Tool              string        `json:"tool"`
	Kind              string        `json:"kind"`
	Method            string        `json:"method"`
	Host              string        `json:"host"`
	Path              string        `json:"path"`
	Query             []tools.Param `json:"query"`
	Headers           []tools.Param `json:"headers"`
	HasBody           bool          `json:"has_body"`
	BodySHA256        string        `json:"body_sha256"`
	Bucket            string        `json:"bucket"`
	Action            string        `json:"action"`
	Key               string        `json:"key"`
	Delimiter         string        `json:"delimiter"`
	MaxKeys           int32         `json:"max_keys"`
	ContinuationToken string        `json:"continuation_token"`
}

// RequestHash returns the hex SHA-256 of the canonical request of a call
// to tool: two calls have the same hash exactly when they send the same
// request.
func RequestHash(tool string, c tools.Canonical) string {
	body := sha256.Sum256(c.Body)
	f := canonicalForm{
		V: 1, Tool: tool, Kind: c.Kind, Method: c.Method, Host: c.Host, Path: c.Path,
		Query: c.Query, Headers: c.Headers, HasBody: c.HasBody, BodySHA256: hex.EncodeToString(body[:]),
		Bucket: c.Bucket, Action: c.Action, Key: c.Key,
		Delimiter: c.Delimiter, MaxKeys: c.MaxKeys, ContinuationToken: c.ContinuationToken,
	}
	b, err := json.Marshal(f)
	if err != nil {
		panic("access: encode canonical request: " + err.Error()) // strings and ints only
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// keys are the MAC keys of the manager, derived from the key it is given
// (itself derived from the vault's root key).
type keys struct {
	binding []byte // approvals
	record  []byte // stored records
}

func deriveKeys(root []byte) (keys, error) {
	if len(root) < 32 {
		return keys{}, fmt.Errorf("access: key of %d bytes, want 32", len(root))
	}
	b, err := hkdf.Key(sha256.New, root, nil, "keyhole access binding v1", 32)
	if err != nil {
		return keys{}, fmt.Errorf("access: derive key: %w", err)
	}
	r, err := hkdf.Key(sha256.New, root, nil, "keyhole access record v1", 32)
	if err != nil {
		return keys{}, fmt.Errorf("access: derive key: %w", err)
	}
	return keys{binding: b, record: r}, nil
}

// binding is what an approval's HMAC covers.
type binding struct {
	ID           string
	Session      string
	Tool         string
	SHA256       string // the canonical request's hash
	ConfigSHA256 string
	Expires      time.Time
	ForSession   bool
}

// sum returns the hex HMAC-SHA256 of b.
func (k keys) sum(b binding) string {
	enc, err := json.Marshal([]any{"keyhole access approval v1", b.ID, b.Session, b.Tool, b.SHA256, b.ConfigSHA256, b.Expires.UTC().Format(time.RFC3339Nano), b.ForSession})
	if err != nil {
		panic("access: encode binding: " + err.Error())
	}
	m := hmac.New(sha256.New, k.binding)
	m.Write(enc)
	return hex.EncodeToString(m.Sum(nil))
}

// verify reports whether mac is the binding's HMAC.
func (k keys) verify(b binding, mac string) bool { return hmacEqualHex(k.sum(b), mac) }

// recordMAC returns the hex HMAC-SHA256 of a stored record's encoding.
func (k keys) recordMAC(enc []byte) string {
	m := hmac.New(sha256.New, k.record)
	m.Write([]byte("keyhole access record v1\n"))
	m.Write(enc)
	return hex.EncodeToString(m.Sum(nil))
}

// hmacEqualHex compares two hex MACs in constant time.
func hmacEqualHex(a, b string) bool {
	x, err1 := hex.DecodeString(a)
	y, err2 := hex.DecodeString(b)
	return err1 == nil && err2 == nil && len(x) > 0 && hmac.Equal(x, y)
}

// newID returns a fresh request id: "acr_" and 20 base32 characters.
func newID() string {
	var b [12]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return "acr_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// WellFormedID reports whether id has the shape of a request id.
func WellFormedID(id string) bool {
	rest, ok := strings.CutPrefix(id, "acr_")
	if !ok || len(rest) != 20 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}
