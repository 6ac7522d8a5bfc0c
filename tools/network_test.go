package tools

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The http and s3 kinds check their network settings alike.
func TestNetworkSettingsSameForEveryKind(t *testing.T) {
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	kinds := map[string]Config{
		"http": {Kind: "http", BaseURL: "https://api.example.com", Credential: Credential{Secret: "api_token", Inject: "bearer"}},
		"s3":   s3TestConfig("https://s3.example.com"),
	}
	tests := map[string]struct {
		set  func(*Config)
		want string // "" is valid
	}{
		"http proxy":          {func(c *Config) { c.Proxy = "http://proxy.internal:3128" }, ""},
		"socks5 proxy":        {func(c *Config) { c.Proxy = "socks5://proxy.internal:1080" }, ""},
		"proxy with userinfo": {func(c *Config) { c.Proxy = "http://u:p@proxy.internal:3128" }, "proxy: must not hold userinfo"},
		"ftp proxy":           {func(c *Config) { c.Proxy = "ftp://proxy.internal" }, "proxy: scheme must be http, https or socks5"},
		"relative proxy":      {func(c *Config) { c.Proxy = "proxy.internal" }, "proxy: must be an absolute URL"},
		"missing ca_file":     {func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, "ca_file: cannot be read"},
		"ca_file not PEM":     {func(c *Config) { c.CAFile = notPEM }, "ca_file: holds no PEM certificate"},
	}
	for kind, base := range kinds {
		for name, tt := range tests {
			t.Run(kind+"/"+name, func(t *testing.T) {
				c := base
				tt.set(&c)
				_, errs := Compile("t", c, Env{})
				switch {
				case tt.want == "" && len(errs) > 0:
					t.Fatalf("Compile(%s tool, %s) = %v, want no error", kind, name, errs)
				case tt.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), "tools.t."+tt.want)):
					t.Fatalf("Compile(%s tool, %s) = %v, want one error %q", kind, name, errs, "tools.t."+tt.want)
				}
			})
		}
	}
}
