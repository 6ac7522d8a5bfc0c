package audit

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/buntdb"
)

// Index keys. Readers find entries through plain keys written in the same
// transaction as the entries they point at, instead of buntdb JSON indexes
// (which re-parse stored values on every btree comparison of every insert):
//
//	ix/s/<hex(session)>/<seq20>  ""           first entry of a call, by session
//	ix/t/<hex(tool)>/<seq20>     ""           first entry of a call, by tool
//	ix/time/<time>/<seq20>       ""           first entry of a call, by time
//	ix/of/<seq20>                <seq20>      the outcome of intent seq
//
// seq20 is the 20-digit seq, so keys sort by seq within one session, tool
// or time. Sessions and tools are hex, so no value (agent-chosen tool names
// included) can contain the "/" that ends it. Times are formatTime's
// fixed-width layout, which sorts as the times do. An empty session or tool
// is not indexed: a Filter never asks for one. Outcomes are found through
// their intent, so only the first entry of a call is indexed by session,
// tool and time.
//
// Index keys are derived data, outside the chain: Verify reads only
// entries, and readers check every record against the filter, so a stale
// key can hide a record from a filtered query but never show a wrong one.
const (
	ixSession = "ix/s/"
	ixTool    = "ix/t/"
	ixTime    = "ix/time/"
	ixTimeEnd = "ix/time0" // the first key after every ixTime key
	ixOf      = "ix/of/"
	seqDigits = 20
)

// appendSeq appends seq as seqDigits zero-padded decimal digits.
func appendSeq(b []byte, seq uint64) []byte {
	var d [seqDigits]byte
	for i := seqDigits - 1; i >= 0; i-- {
		d[i] = byte('0' + seq%10)
		seq /= 10
	}
	return append(b, d[:]...)
}

// valueKey is prefix + hex(value) + "/" + seq20.
func valueKey(prefix, value string, seq uint64) string {
	b := make([]byte, 0, len(prefix)+2*len(value)+1+seqDigits)
	b = append(b, prefix...)
	b = hex.AppendEncode(b, []byte(value))
	b = append(b, '/')
	return string(appendSeq(b, seq))
}

// valueRange is the key range (lo, hi) holding every key of one value.
func valueRange(prefix, value string) (lo, hi string) {
	p := prefix + hex.EncodeToString([]byte(value))
	return p + "/", p + "0" // '0' is the byte after '/'
}

func timeKey(t string, seq uint64) string {
	b := make([]byte, 0, len(ixTime)+len(t)+1+seqDigits)
	b = append(append(append(b, ixTime...), t...), '/')
	return string(appendSeq(b, seq))
}

func ofKey(intent uint64) string { return seqKey(ixOf, intent) }

// indexSeq parses the seq at the end of a session, tool or time key.
func indexSeq(key string) (uint64, bool) {
	if len(key) < seqDigits {
		return 0, false
	}
	n, err := strconv.ParseUint(key[len(key)-seqDigits:], 10, 64)
	return n, err == nil
}

// indexed is what an entry's index keys are derived from.
type indexed struct {
	Seq     uint64 `json:"seq"`
	Type    string `json:"type"`
	Of      uint64 `json:"of"`
	Time    string `json:"time"`
	Session string `json:"session"`
	Tool    string `json:"tool"`
}

// indexedOf is the indexed part of e as it is stored, which is how readers
// see it: the JSON encoding replaces each byte of invalid UTF-8 with U+FFFD.
func indexedOf(e *entry) indexed {
	return indexed{Seq: e.Seq, Type: e.Type, Of: e.Of, Time: e.Time, Session: asStored(e.Session), Tool: asStored(e.Tool)}
}

// asStored is s as encoding/json stores it.
func asStored(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// each calls fn with every index key of the entry and its value.
func (x *indexed) each(fn func(key, value string) error) error {
	if x.Type == typeOutcome {
		return fn(ofKey(x.Of), string(appendSeq(nil, x.Seq)))
	}
	if x.Session != "" {
		if err := fn(valueKey(ixSession, x.Session, x.Seq), ""); err != nil {
			return err
		}
	}
	if x.Tool != "" {
		if err := fn(valueKey(ixTool, x.Tool, x.Seq), ""); err != nil {
			return err
		}
	}
	return fn(timeKey(x.Time, x.Seq), "")
}

// setIndex writes the index keys of x.
func setIndex(tx *buntdb.Tx, x *indexed) error {
	return x.each(func(k, v string) error {
		_, _, err := tx.Set(k, v, nil)
		return err
	})
}

// deleteIndex removes the index keys of x that exist.
func deleteIndex(tx *buntdb.Tx, x *indexed) error {
	return x.each(func(k, _ string) error {
		if _, err := tx.Delete(k); err != nil && !errors.Is(err, buntdb.ErrNotFound) {
			return err
		}
		return nil
	})
}

// outcomeFor finds the outcome of intent seq through its "of" key, or nil.
func outcomeFor(tx *buntdb.Tx, seq uint64) (*entry, error) {
	v, err := tx.Get(ofKey(seq))
	if errors.Is(err, buntdb.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	at, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, nil // not a key this package wrote: no outcome known
	}
	out, err := getEntry(tx, at)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if out.Type != typeOutcome || out.Of != seq {
		return nil, nil
	}
	return out, nil
}

// reindexTail writes the index keys missing for the entries after the last
// one known fsynced. buntdb writes a transaction's keys in no fixed order,
// so a crash mid-write can keep an entry and lose some of its index keys;
// only the entries after the checkpoint can be in that state. Without a
// readable checkpoint the last maxBatch entries are checked. Entries at or
// before the checkpoint are not read, so opening costs nothing that grows
// with the log.
func (l *Log) reindexTail() error {
	after := l.head.Seq - min(l.head.Seq, maxBatch)
	if l.cp != nil {
		if data, err := l.cp.GetRecord(CheckpointName); err == nil {
			if cp, err := l.keyed.decodeLink(checkpointDomain, data); err == nil && cp.Seq <= l.head.Seq {
				after = cp.Seq
			}
		}
	}
	if after >= l.head.Seq {
		return nil
	}
	var missing []indexed
	err := l.db.View(func(tx *buntdb.Tx) error {
		return tx.AscendRange("", entryKey(after+1), entryEnd, func(_, v string) bool {
			var x indexed
			// A damaged entry is Verify's to report, not a reason to refuse.
			if json.Unmarshal([]byte(v), &x) == nil && !hasIndex(tx, &x) {
				missing = append(missing, x)
			}
			return true
		})
	})
	if err == nil && len(missing) > 0 {
		err = l.db.Update(func(tx *buntdb.Tx) error {
			for i := range missing {
				if err := setIndex(tx, &missing[i]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("audit: restore index keys: %w", err)
	}
	return nil
}

// hasIndex reports whether every index key of x is present.
func hasIndex(tx *buntdb.Tx, x *indexed) bool {
	return x.each(func(k, _ string) error {
		_, err := tx.Get(k)
		return err
	}) == nil
}
