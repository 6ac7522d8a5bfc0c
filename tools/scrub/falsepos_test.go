package scrub

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"unicode/utf16"
)

var fpSecrets = flag.Int("scrub.fpsecrets", 20, "secrets of each shape in TestFalsePositiveRate")

// TestFalsePositiveRate measures how often bodies that hold no secret are
// changed anyway: realistic response bodies (GitHub issues and commits
// JSON, HTML, MIME and data-URI base64 of binary data, PHP-style escaped
// JSON, an S3 listing, a hex dump, certificate fingerprints, form data,
// UTF-16 text) against random secrets of real credential shapes. A change
// is a false positive; it logs the rate per body and requires at most one
// in a thousand secrets per body, so none over the default set (run with
// -scrub.fpsecrets=500 -v for a larger measurement).
func TestFalsePositiveRate(t *testing.T) {
	bodies := exampleBodies()
	r := rand.New(rand.NewPCG(7, 11))
	shapes := secretShapes()
	hits := make(map[string]int)
	trials := 0
	for _, sh := range shapes {
		for range *fpSecrets {
			secret := sh.gen(r)
			var secrets [][]byte
			for _, v := range strings.Split(secret, "\x00") {
				secrets = append(secrets, []byte(v))
			}
			s := New(secrets...)
			trials++
			for _, b := range bodies {
				if _, o := s.Scrub(b.body); o != Clean {
					hits[b.name]++
					t.Logf("false positive: %s secret %q on %s: %v", sh.name, secret, b.name, o)
				}
			}
		}
	}
	for _, b := range bodies {
		t.Logf("%-28s %7d bytes: %d of %d secrets changed it", b.name, len(b.body), hits[b.name], trials)
	}
	for _, b := range bodies {
		if hits[b.name] > trials/1000 {
			t.Errorf("%s: %d of %d secrets changed it, want at most one in a thousand", b.name, hits[b.name], trials)
		}
	}
}

type secretShape struct {
	name string
	// gen returns one secret, or several values joined by NUL (as an http
	// tool passes "user:password" and the password).
	gen func(r *rand.Rand) string
}

const (
	alnum    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	hexChars = "0123456789abcdef"
)

func randString(r *rand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

func secretShapes() []secretShape {
	return []secretShape{
		{"github token", func(r *rand.Rand) string { return "ghp_" + randString(r, alnum, 36) }},
		{"aws access key id", func(r *rand.Rand) string { return "AKIA" + randString(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16) }},
		{"aws secret key", func(r *rand.Rand) string { return randString(r, alnum+"+/", 40) }},
		{"stripe key", func(r *rand.Rand) string { return "sk_live_" + randString(r, alnum, 24) }},
		{"hex 32", func(r *rand.Rand) string { return randString(r, hexChars, 32) }},
		{"hex 64", func(r *rand.Rand) string { return randString(r, hexChars, 64) }},
		{"uuid", func(r *rand.Rand) string {
			h := randString(r, hexChars, 32)
			return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
		}},
		{"basic auth", func(r *rand.Rand) string {
			// As an http tool with inject: basic scrubs "svc-keyhole-bot:…":
			// the password and the key-length user name.
			return randString(r, alnum, 20) + "\x00svc-keyhole-bot"
		}},
	}
}

type exampleBody struct {
	name string
	body []byte
}

// exampleBodies builds the bodies of TestFalsePositiveRate and
// BenchmarkScrubBodies, deterministically.
func exampleBodies() []exampleBody {
	r := rand.New(rand.NewPCG(3, 5))
	words := strings.Fields(`the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no more out up into do any about than time only could new them man some these then two first may very like over such our most even made after also did many before must through back years where much your way well down should because each just those how too little state good world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three`)
	sentence := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[r.IntN(len(words))])
		}
		return b.String()
	}
	sha := func() string { return randString(r, hexChars, 40) }
	login := func() string { return words[r.IntN(len(words))] + "-" + words[r.IntN(len(words))] }
	date := func() string {
		return fmt.Sprintf("2026-%02d-%02dT%02d:%02d:%02dZ", 1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60))
	}
	binary := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}

	var out []exampleBody
	add := func(name string, b []byte) { out = append(out, exampleBody{name, b}) }

	// GitHub issues, pretty-printed, with Markdown bodies.
	var issues []map[string]any
	for i := range 120 {
		u := login()
		issues = append(issues, map[string]any{
			"url":      fmt.Sprintf("https://api.github.com/repos/acme/api/issues/%d", 1000+i),
			"html_url": fmt.Sprintf("https://github.com/acme/api/issues/%d", 1000+i),
			"id":       r.Int64N(1 << 40), "node_id": "I_kwDO" + randString(r, alnum+"_-", 16),
			"number": 1000 + i, "title": sentence(6), "state": []string{"open", "closed"}[r.IntN(2)],
			"user":   map[string]any{"login": u, "id": r.IntN(1 << 30), "avatar_url": "https://avatars.githubusercontent.com/u/" + fmt.Sprint(r.IntN(1<<30)) + "?v=4"},
			"labels": []map[string]any{{"name": "bug", "color": randString(r, hexChars, 6)}},
			"body": "### Steps\r\n\r\n1. " + sentence(12) + "\r\n2. Run `curl -H \"Accept: application/json\" https://example.com/a?b=1&c=2`\r\n\r\n" +
				"```go\nfmt.Println(\"" + sentence(4) + "\")\n```\n\nCommit " + sha()[:7] + " — café, naïve, 日本語, 😀 <b>bold</b>",
			"created_at": date(), "updated_at": date(), "comments": r.IntN(30),
		})
	}
	js, _ := json.MarshalIndent(issues, "", "  ")
	add("github issues json", js)

	// GitHub commits: SHAs, node ids and PGP signatures wrapped at 64.
	var commits []map[string]any
	for range 80 {
		s := sha()
		sig := "-----BEGIN PGP SIGNATURE-----\n\n" + wrapLines(base64.StdEncoding.EncodeToString(binary(540)), 64, "\n") + "\n=" + randString(r, alnum, 4) + "\n-----END PGP SIGNATURE-----\n"
		commits = append(commits, map[string]any{
			"sha": s, "node_id": "C_kwDO" + randString(r, alnum, 30),
			"commit": map[string]any{
				"author":       map[string]any{"name": login(), "email": login() + "@users.noreply.github.com", "date": date()},
				"message":      sentence(8) + "\n\n" + sentence(20),
				"tree":         map[string]any{"sha": sha(), "url": "https://api.github.com/repos/acme/api/git/trees/" + sha()},
				"verification": map[string]any{"verified": true, "reason": "valid", "signature": sig},
			},
			"url":     "https://api.github.com/repos/acme/api/commits/" + s,
			"parents": []map[string]any{{"sha": sha()}, {"sha": sha()}},
		})
	}
	js, _ = json.Marshal(commits)
	add("github commits json", js)

	// An HTML page with references, links and an inline script.
	var page strings.Builder
	page.WriteString("<!doctype html><html><head><title>Docs &mdash; API</title><script>var cfg = {\"api\":\"https:\\/\\/example.com\\/v1\",\"nonce\":\"" + randString(r, alnum, 22) + "\"};</script></head><body>\n")
	for range 400 {
		fmt.Fprintf(&page, "<p class=\"x\">%s &amp; %s &lt;code&gt; &#39;%s&#39; &nbsp;<a href=\"/docs/%s?q=%s&amp;page=%d\">more&hellip;</a></p>\n",
			html.EscapeString(sentence(10)), sentence(3), sentence(2), login(), url.QueryEscape(sentence(3)), r.IntN(50))
	}
	page.WriteString("</body></html>\n")
	add("html page", []byte(page.String()))

	// Binary data as MIME base64 (76 columns, CRLF) and as a data URI.
	add("mime base64 of binary", []byte(wrapLines(base64.StdEncoding.EncodeToString(binary(96<<10)), 76, "\r\n")))
	js, _ = json.Marshal(map[string]string{"avatar": "data:image/png;base64," + base64.StdEncoding.EncodeToString(binary(64<<10))})
	add("data uri json", js)

	// PHP-style JSON: escaped slashes, everything beyond ASCII \u-escaped.
	var php strings.Builder
	php.WriteString("[")
	for i := range 300 {
		if i > 0 {
			php.WriteString(",")
		}
		text := sentence(8) + " élève café 北京市 😀"
		var esc strings.Builder
		for _, u := range utf16.Encode([]rune(text)) {
			if u < 0x80 {
				esc.WriteByte(byte(u))
			} else {
				fmt.Fprintf(&esc, `\u%04x`, u)
			}
		}
		fmt.Fprintf(&php, `{"id":%d,"link":"https:\/\/example.com\/posts\/%d\/%s","text":"%s"}`, i, i, login(), esc.String())
	}
	php.WriteString("]")
	add("php escaped json", []byte(php.String()))

	// An S3 listing.
	var xml strings.Builder
	xml.WriteString(`<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>acme-archive</Name>`)
	for range 400 {
		fmt.Fprintf(&xml, "<Contents><Key>reports/2026/%s/%s.csv</Key><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag><Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>",
			login(), strings.ReplaceAll(sentence(3), " ", "_"), date(), randString(r, hexChars, 32), r.IntN(1<<24))
	}
	xml.WriteString("</ListBucketResult>")
	add("s3 list xml", []byte(xml.String()))

	// A hex dump (xxd) and certificate fingerprints.
	var dump strings.Builder
	data := binary(16 << 10)
	for off := 0; off < len(data); off += 16 {
		fmt.Fprintf(&dump, "%08x: ", off)
		for i := 0; i < 16; i += 2 {
			fmt.Fprintf(&dump, "%02x%02x ", data[off+i], data[off+i+1])
		}
		dump.WriteString(" ................\n")
	}
	add("hex dump", []byte(dump.String()))
	var fps strings.Builder
	for range 600 {
		d := binary(32)
		parts := make([]string, len(d))
		for i, c := range d {
			parts[i] = strings.ToUpper(hex.EncodeToString([]byte{c}))
		}
		fmt.Fprintf(&fps, "SHA256 Fingerprint=%s\n", strings.Join(parts, ":"))
	}
	add("certificate fingerprints", []byte(fps.String()))

	// Form data with percent escapes.
	form := url.Values{}
	for i := range 500 {
		form.Add(fmt.Sprintf("f%d", i), sentence(4)+" / é & ü = ?")
	}
	add("urlencoded form", []byte(form.Encode()))

	// UTF-16LE text.
	var u16 []byte
	for range 800 {
		for _, u := range utf16.Encode([]rune(sentence(9) + "\r\n")) {
			u16 = binary16(u16, u)
		}
	}
	add("utf16le text", u16)
	return out
}

func binary16(b []byte, u uint16) []byte { return binary.LittleEndian.AppendUint16(b, u) }

// wrapLines breaks s into lines of width characters.
func wrapLines(s string, width int, eol string) string {
	var b bytes.Buffer
	for len(s) > width {
		b.WriteString(s[:width])
		b.WriteString(eol)
		s = s[width:]
	}
	b.WriteString(s)
	return b.String()
}

// BenchmarkScrubBodies scrubs each example body with one secret that is in
// none of them: the cost on realistic bodies with no match.
func BenchmarkScrubBodies(b *testing.B) {
	s := New([]byte("ghp_R4nd0mT0k3nV4lu3xYz0123456789abcd"))
	for _, body := range exampleBodies() {
		b.Run(strings.ReplaceAll(body.name, " ", "_"), func(b *testing.B) {
			b.SetBytes(int64(len(body.body)))
			for b.Loop() {
				if _, o := s.Scrub(body.body); o != Clean {
					b.Fatalf("Scrub(%s) = %v, want clean", body.name, o)
				}
			}
		})
	}
}
