package server

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/term"
)

// Log attribute keys, shared by every log line keyhole writes.
const (
	LogSession = "session"
	LogScope   = "scope"
	LogTool    = "tool"
	LogSecret  = "secret" // a secret's name, never its value
	LogError   = "err"
	LogAddr    = "addr"
	LogConfig  = "config"
)

// NewLogger returns a logger writing to w: "text" is tint (coloured when w
// is a terminal), "json" is one JSON object per line.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("server: log level %q: want debug, info, warn or error", level)
	}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), nil
	case "text", "":
		noColor := true
		if f, ok := w.(*os.File); ok {
			noColor = !term.IsTerminal(int(f.Fd()))
		}
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, TimeFormat: time.TimeOnly, NoColor: noColor})), nil
	default:
		return nil, fmt.Errorf("server: log format %q: want text or json", format)
	}
}
