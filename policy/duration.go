package policy

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Day is the unit "d" of ParseDuration: 24 hours.
const Day = 24 * time.Hour

var errDuration = errors.New("not a duration")

// ParseDuration parses a duration as keyhole.yaml and the command line
// write them: a Go duration ("90s", "15m", "1h30m") that may start with
// a number of days ("7d", "1d12h", "1.5d"). Every duration keyhole reads
// (a scope's ttl, a tool's timeout, audit retention, --ttl, --since,
// --idle-exit) goes through it.
func ParseDuration(s string) (time.Duration, error) {
	rest, neg := s, false
	if r, ok := strings.CutPrefix(rest, "-"); ok {
		rest, neg = r, true
	} else {
		rest = strings.TrimPrefix(rest, "+")
	}
	var d time.Duration
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		days, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || i == 0 || strings.ContainsAny(rest[:i], "eE+-_xXpP") || days > 100_000 {
			return 0, errDuration
		}
		d = time.Duration(days * float64(Day))
		rest = rest[i+1:]
		if rest == "" {
			if neg {
				d = -d
			}
			return d, nil
		}
	} else if rest == "" {
		return 0, errDuration
	}
	more, err := time.ParseDuration(rest)
	if err != nil || strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
		return 0, errDuration
	}
	d += more
	if neg {
		d = -d
	}
	return d, nil
}
