// Package sessions keeps the sessions a broker serves and their phantom
// tokens: opaque bearer tokens ("khs_…") that name a session, are useless
// outside keyhole, and are stored only as SHA-256 hashes.
//
// A session's lifetime is decided by policy.Session with the broker's
// clock; this store only persists what policy decided. Records never expire
// through buntdb TTLs. Each record is MAC'd (HMAC-SHA256 with a key the
// broker derives from the vault's root key), so a record edited on disk (a
// later expiry, another scope, another config) reads as [ErrTampered]; and
// each record names, by hash, a snapshot of the config its scope came
// from, so a session runs the scope it started with across restarts.
package sessions

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math/big"
	"strings"
)

// TokenPrefix starts every phantom token, so secret scanners can find a
// leaked one.
const TokenPrefix = "khs_"

const (
	tokenBytes   = 32
	payloadChars = 43 // base62 of 32 bytes, zero-padded
	checksumLen  = 6
	base62       = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// NewToken returns a fresh phantom token: "khs_" + 32 random bytes in
// base62 + a 6-character base62 CRC32 checksum of that payload.
func NewToken() (string, error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("sessions: random token: %w", err)
	}
	payload := encode62(new(big.Int).SetBytes(b[:]), payloadChars)
	return TokenPrefix + payload + checksum(payload), nil
}

// WellFormed reports whether tok has the shape and checksum of a phantom
// token. It says nothing about whether the token names a live session.
func WellFormed(tok string) bool {
	rest, ok := strings.CutPrefix(tok, TokenPrefix)
	if !ok || len(rest) != payloadChars+checksumLen {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if strings.IndexByte(base62, rest[i]) < 0 {
			return false
		}
	}
	payload, sum := rest[:payloadChars], rest[payloadChars:]
	return subtle.ConstantTimeCompare([]byte(checksum(payload)), []byte(sum)) == 1
}

// Hash returns the hex SHA-256 of a token: the only form stored.
func Hash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func checksum(payload string) string {
	return encode62(new(big.Int).SetUint64(uint64(crc32.ChecksumIEEE([]byte(payload)))), checksumLen)
}

func encode62(n *big.Int, width int) string {
	out := make([]byte, width)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62[mod.Int64()]
	}
	return string(out)
}
