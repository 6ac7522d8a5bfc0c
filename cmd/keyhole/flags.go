package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server/config"
)

// durationFlag is a duration flag that reads durations as keyhole.yaml
// does: Go durations that may start with days ("7d", "1d12h").
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return "0s"
	}
	return f.d.String()
}

func (f durationFlag) Set(s string) error {
	d, err := config.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func (f durationFlag) Type() string { return "duration" }

// durationVar registers a duration flag on c.
func durationVar(c *cobra.Command, d *time.Duration, name string, value time.Duration, usage string) {
	*d = value
	c.Flags().Var(durationFlag{d}, name, usage)
}
