package policy

import (
	"strconv"
	"testing"
)

// BenchmarkDecide measures Scope.Decide for scopes of 1, 10 and 100
// grants. The allowed call matches the last grant, so every grant is
// evaluated; the denied call matches none.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		grants := make([]GrantConfig, n)
		for i := range grants {
			repo := "repo" + strconv.Itoa(i)
			grants[i] = GrantConfig{Tool: "github", Methods: []string{"GET", "POST"}, Paths: []string{
				"/repos/acme/" + repo + "/issues/*",
				"/repos/acme/" + repo + "/issues/*/comments/**",
			}}
		}
		p := mustCompile(b, map[string]ScopeConfig{"s": {Grants: grants}})
		sc, _ := p.Scope("s")
		last := "repo" + strconv.Itoa(n-1)
		calls := map[string]struct {
			req   Request
			allow bool
		}{
			"allowed": {Request{Tool: "github", Method: "POST", Segments: []string{"repos", "acme", last, "issues", "7", "comments", "9", "reactions"}}, true},
			"denied":  {Request{Tool: "github", Method: "DELETE", Segments: []string{"repos", "acme", last, "issues", "7"}}, false},
		}
		for name, c := range calls {
			b.Run(strconv.Itoa(n)+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if d := sc.Decide(c.req); d.Allow != c.allow {
						b.Fatalf("Decide(%s) = %+v", c.req, d)
					}
				}
			})
		}
	}
}

// BenchmarkSessionDecide measures the full per-call check of an allowed
// call, with rate and max_calls in force.
func BenchmarkSessionDecide(b *testing.B) {
	p := mustCompile(b, map[string]ScopeConfig{"s": {Rate: "1000000/s", Grants: []GrantConfig{
		{Tool: "github", Methods: []string{"GET"}, Paths: []string{"/repos/acme/api/issues/*"}},
	}}})
	sc, _ := p.Scope("s")
	s := NewSession("s1", sc, t0, 0, "")
	req := get("/repos/acme/api/issues/7")
	b.ReportAllocs()
	for b.Loop() {
		if !s.Decide(t0, req).Allow {
			b.Fatal("denied")
		}
	}
}
