package policy

import (
	"testing"
	"time"
)

func TestParseDurationAcceptsDays(t *testing.T) {
	good := map[string]time.Duration{
		"1d":     24 * time.Hour,
		"7d":     7 * 24 * time.Hour,
		"1.5d":   36 * time.Hour,
		"1d12h":  36 * time.Hour,
		"2d30m":  48*time.Hour + 30*time.Minute,
		"90s":    90 * time.Second,
		"1h30m":  90 * time.Minute,
		"-1d":    -24 * time.Hour,
		"0d":     0,
		"250ms":  250 * time.Millisecond,
		"720h":   720 * time.Hour,
		"30d":    720 * time.Hour,
		"+2h":    2 * time.Hour,
		"0.5d1h": 13 * time.Hour,
	}
	for in, want := range good {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "1", "1day", "1dd", "d1h", "1d-1h", "1e3d", "0x1d", "1h1d", "abc", "--1d", "1d+1h", "1_0d"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
}
