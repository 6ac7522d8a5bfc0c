package vault

import (
	"os"
	"testing"

	"github.com/tidwall/buntdb"
)

// TestMain lowers the Argon2id cost of the vaults these tests create to
// the least a vault file may hold, so passphrase tests stay fast under the
// race detector. TestKDFCostIsRFC9106 checks the production cost.
func TestMain(m *testing.M) {
	kdfCost = kdfParams{Alg: kdfArgon2id, Time: 1, MemoryKiB: 8 * 1024, Threads: 1}
	os.Exit(m.Run())
}

func TestKDFCostIsRFC9106(t *testing.T) {
	saved := kdfCost
	kdfCost = rfc9106Cost
	t.Cleanup(func() { kdfCost = saved })
	if c := rfc9106Cost; c.Time != 3 || c.MemoryKiB != 64*1024 || c.Threads != 4 {
		t.Fatalf("production Argon2id cost = t=%d m=%d KiB p=%d, want RFC 9106's t=3 m=65536 KiB p=4", c.Time, c.MemoryKiB, c.Threads)
	}
	ks := KeySource{Passphrase: passphrase("correct horse battery staple")}
	v, path := newVault(t, ks)
	var stored string
	if err := v.db.View(func(tx *buntdb.Tx) (err error) {
		stored, err = tx.Get(keyKDF)
		return err
	}); err != nil {
		t.Fatalf("read %s: %v", keyKDF, err)
	}
	p, err := parseKDFParams(stored)
	if err != nil || p.Time != 3 || p.MemoryKiB != 64*1024 || p.Threads != 4 {
		t.Fatalf("new passphrase vault stores %s (%v), want t=3 m=65536 p=4", stored, err)
	}
	v.Close()
	v2, err := Open(path, ks)
	if err != nil {
		t.Fatalf("Open(passphrase) = %v", err)
	}
	v2.Close()
}
