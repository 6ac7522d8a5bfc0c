package tools

import (
	"maps"
	"slices"
	"strings"

	"github.com/keyhole-dev/keyhole/policy"
)

// GitHub permission levels, weakest first.
const (
	ghRead  = "read"
	ghWrite = "write"
	ghAdmin = "admin"
)

func ghRank(level string) int {
	switch level {
	case ghRead:
		return 1
	case ghWrite:
		return 2
	case ghAdmin:
		return 3
	}
	return 0
}

// ghWeaker returns the weaker of two levels.
func ghWeaker(a, b string) string {
	if ghRank(a) <= ghRank(b) {
		return a
	}
	return b
}

// ghStronger returns the stronger of two levels ("" is none).
func ghStronger(a, b string) string {
	if ghRank(a) >= ghRank(b) {
		return a
	}
	return b
}

// ghNeed is what a session's grants need of a GitHub App installation:
// the repositories their paths name and the permissions their methods
// and paths need. It is what keyhole asks an installation token for,
// before it is cut down to what the installation has.
type ghNeed struct {
	// allRepos: some grant's path cannot name its repository, so the
	// token reaches every repository of the installation.
	allRepos bool
	// repos are the repositories named, as "owner/repo", sorted.
	repos []string
	// perms are the permissions needed, by GitHub's name.
	perms map[string]string
	// anyPerm is the level at which every permission of the installation
	// is needed, because some grant's path names no resource keyhole can
	// map to a permission ("" for none).
	anyPerm string
}

// ghLevel is the level a method needs: read for GET, HEAD and OPTIONS,
// write for the rest.
func ghLevel(method string) string {
	switch method {
	case "GET", "HEAD", "OPTIONS":
		return ghRead
	}
	return ghWrite
}

// githubNeeds maps a session's grants on a github_app tool to what its
// installation token must reach. See ghPath for how one path maps.
func githubNeeds(grants []policy.HTTPGrant) ghNeed {
	n := ghNeed{perms: map[string]string{}}
	repos := map[string]bool{}
	for _, g := range grants {
		p := ghPath{paths: g.Paths}
		for _, m := range g.Methods {
			p.need(&n, repos, ghLevel(m))
		}
	}
	n.repos = slices.Sorted(maps.Keys(repos))
	return n
}

// ghPath is one grant's path patterns, all of which a request matches.
type ghPath struct {
	paths [][]string
}

// lit returns the literal every matching path has at segment i, if the
// patterns fix one: some pattern has a literal there with no "**" before.
func (p ghPath) lit(i int) (string, bool) {
	for _, segs := range p.paths {
		for j, s := range segs {
			if s == "**" {
				break
			}
			if j == i {
				if s != "*" {
					return s, true
				}
				break
			}
		}
	}
	return "", false
}

// ends reports whether every matching path has exactly n segments.
func (p ghPath) ends(n int) bool {
	for _, segs := range p.paths {
		if !slices.Contains(segs, "**") {
			return len(segs) == n
		}
	}
	return false
}

// has reports whether some pattern has the literal s after segment i.
func (p ghPath) has(i int, s string) bool {
	for _, segs := range p.paths {
		if len(segs) > i+1 && slices.Contains(segs[i+1:], s) {
			return true
		}
	}
	return false
}

// need adds what a request of this path at level needs.
//
// Repositories: /repos/{owner}/{repo}/… with both literal names that one
// repository; a wildcard in either (or /repositories/{id}/…, or a
// wildcard first segment) reaches every repository of the installation.
// Other paths (/orgs/…, /search/…) name no repository.
//
// Permissions: the resource segment after the repository (issues, pulls,
// contents, …) or the organization (members, hooks, …) names the
// permission (ghRepoPerms, ghOrgPerms), read for GET/HEAD, write for the
// other methods; the repository itself is metadata (read) or
// administration (write). A resource keyhole does not know, or a
// wildcard where the resource is, needs every permission the
// installation has, at that level.
func (p ghPath) need(n *ghNeed, repos map[string]bool, level string) {
	any := func() { n.anyPerm = ghStronger(n.anyPerm, level) }
	add := func(perm string) { n.perms[perm] = ghStronger(n.perms[perm], level) }
	first, ok := p.lit(0)
	if !ok {
		n.allRepos = true
		any()
		return
	}
	switch first {
	case "repos", "repositories":
		at := 3
		if first == "repos" {
			owner, ok1 := p.lit(1)
			repo, ok2 := p.lit(2)
			if ok1 && ok2 {
				repos[owner+"/"+repo] = true
			} else {
				n.allRepos = true
			}
		} else {
			n.allRepos, at = true, 2
		}
		if perm, ok := p.resource(at, level, ghRepoPerms); ok {
			if perm != "" {
				add(perm)
			}
			return
		}
		any()
	case "orgs":
		if perm, ok := p.resource(2, level, ghOrgPerms); ok {
			if perm != "" {
				add(perm)
			}
			return
		}
		any()
	case "search":
		sub, _ := p.lit(1)
		perm, ok := ghSearchPerms[sub]
		if !ok || level != ghRead {
			any()
		} else if perm != "" {
			add(perm)
		}
	default:
		if !ghPublic[first] || level != ghRead {
			any()
		}
	}
}

// resource returns the permission a request under a repository or
// organization needs, whose resource segment is at index at: "" when
// none beyond metadata. ok is false when keyhole cannot tell.
func (p ghPath) resource(at int, level string, table map[string]ghResource) (string, bool) {
	if p.ends(at) {
		// The repository or organization itself.
		if level == ghRead {
			return "", true
		}
		if table[""].write == "" {
			return "", false
		}
		return table[""].write, true
	}
	r, ok := p.lit(at)
	if !ok {
		return "", false
	}
	res, ok := table[r]
	if !ok {
		return "", false
	}
	if res.sub != nil {
		sub, ok := p.lit(at + 1)
		perm, known := res.sub[sub]
		switch {
		case ok && known:
			return perm, true
		case !ok || res.subOnly:
			return "", false
		}
	}
	if res.unless != "" && p.has(at, res.unless) {
		return res.unlessPerm, true
	}
	if level == ghRead {
		return res.read, true
	}
	return res.write, res.write != ""
}

// ghResource is the permission one resource segment needs: read and
// write name the permission for each level ("" read: metadata alone;
// "" write: unknown). sub maps a known second segment to its own
// permission; unless names a later segment that moves the resource to
// unlessPerm (branch protection is administration); subOnly says only
// the second segments in sub are known.
type ghResource struct {
	read, write        string
	sub                map[string]string
	subOnly            bool
	unless, unlessPerm string
}

func same(perm string) ghResource { return ghResource{read: perm, write: perm} }

// ghRepoPerms maps the segment after /repos/{owner}/{repo}/ to GitHub's
// repository permission names (the "" entry is the repository itself).
var ghRepoPerms = map[string]ghResource{
	"":                         {write: "administration"},
	"issues":                   same("issues"),
	"labels":                   same("issues"),
	"milestones":               same("issues"),
	"assignees":                same("issues"),
	"pulls":                    same("pull_requests"),
	"contents":                 same("contents"),
	"git":                      same("contents"),
	"commits":                  same("contents"),
	"comments":                 same("contents"),
	"compare":                  same("contents"),
	"readme":                   same("contents"),
	"tarball":                  same("contents"),
	"zipball":                  same("contents"),
	"merges":                   same("contents"),
	"merge-upstream":           same("contents"),
	"dispatches":               same("contents"),
	"releases":                 same("contents"),
	"tags":                     same("contents"),
	"branches":                 {read: "contents", write: "contents", unless: "protection", unlessPerm: "administration"},
	"actions":                  {read: "actions", write: "actions", sub: map[string]string{"secrets": "secrets", "variables": "actions_variables"}},
	"check-runs":               same("checks"),
	"check-suites":             same("checks"),
	"deployments":              same("deployments"),
	"statuses":                 same("statuses"),
	"hooks":                    same("repository_hooks"),
	"pages":                    same("pages"),
	"projects":                 same("repository_projects"),
	"code-scanning":            same("security_events"),
	"secret-scanning":          same("secret_scanning_alerts"),
	"dependabot":               {sub: map[string]string{"alerts": "vulnerability_alerts", "secrets": "dependabot_secrets"}, subOnly: true},
	"keys":                     same("administration"),
	"invitations":              same("administration"),
	"autolinks":                same("administration"),
	"vulnerability-alerts":     same("administration"),
	"automated-security-fixes": same("administration"),
	"collaborators":            {write: "administration"},
	"teams":                    {write: "administration"},
	"topics":                   {write: "administration"},
	"languages":                {},
	"contributors":             {},
	"stargazers":               {},
	"subscribers":              {},
	"events":                   {},
	"forks":                    {write: "administration"},
}

// ghOrgPerms maps the segment after /orgs/{org}/ to GitHub's
// organization permission names.
var ghOrgPerms = map[string]ghResource{
	"":                      {write: "organization_administration"},
	"members":               same("members"),
	"memberships":           same("members"),
	"teams":                 same("members"),
	"invitations":           same("members"),
	"hooks":                 same("organization_hooks"),
	"projects":              same("organization_projects"),
	"packages":              same("organization_packages"),
	"blocks":                same("organization_user_blocking"),
	"repos":                 {write: "administration"},
	"actions":               {sub: map[string]string{"secrets": "organization_secrets", "variables": "organization_actions_variables", "runners": "organization_self_hosted_runners"}, subOnly: true},
	"outside_collaborators": same("members"),
}

// ghSearchPerms maps /search/{what} to the permission its results need.
var ghSearchPerms = map[string]string{
	"code":         "contents",
	"commits":      "contents",
	"issues":       "issues",
	"repositories": "",
	"topics":       "",
	"users":        "",
	"labels":       "issues",
}

// ghPublic are top-level resources an installation token reads without
// any permission.
var ghPublic = map[string]bool{
	"rate_limit": true, "meta": true, "zen": true, "octocat": true, "emojis": true,
	"licenses": true, "gitignore": true, "codes_of_conduct": true, "users": true,
	"installation": true,
}

// ghRequest is the body of POST /app/installations/{id}/access_tokens.
type ghRequest struct {
	Repositories []string          `json:"repositories,omitempty"`
	Permissions  map[string]string `json:"permissions"`
}

// ghInstallation is what GET /app/installations/{id} says of an
// installation.
type ghInstallation struct {
	Account struct {
		Login string `json:"login"`
	} `json:"account"`
	Permissions map[string]string `json:"permissions"`
}

// request cuts a need down to what the installation has: repositories
// of its account only (by name, as GitHub takes them), and each
// permission at the weaker of the level needed and the installation's.
// Permissions the installation lacks are left out (GitHub would refuse
// the whole request); metadata read is always asked for, so the request
// never leaves permissions empty (which GitHub reads as "all"). It
// returns the repositories of another account it left out.
func (n ghNeed) request(inst ghInstallation) (ghRequest, []string) {
	req := ghRequest{Permissions: map[string]string{}}
	for perm, have := range inst.Permissions {
		want := n.perms[perm]
		if n.anyPerm != "" {
			want = ghStronger(want, n.anyPerm)
		}
		if want != "" && ghRank(have) > 0 {
			req.Permissions[perm] = ghWeaker(want, have)
		}
	}
	req.Permissions["metadata"] = ghRead
	var foreign []string
	if !n.allRepos {
		req.Repositories = []string{}
		for _, r := range n.repos {
			owner, name, _ := strings.Cut(r, "/")
			if !strings.EqualFold(owner, inst.Account.Login) {
				foreign = append(foreign, r)
				continue
			}
			if !slices.Contains(req.Repositories, name) {
				req.Repositories = append(req.Repositories, name)
			}
		}
		slices.Sort(req.Repositories)
	}
	return req, foreign
}
