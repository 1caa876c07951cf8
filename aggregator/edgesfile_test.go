package aggregator

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/edgemirror/edgemirror/internal/wire"
)

func tokenLine(id, token, topics string) string {
	sum := sha256.Sum256([]byte(token))
	return id + " token:sha256:" + hex.EncodeToString(sum[:]) + " " + topics
}

func TestParseEdgesFile(t *testing.T) {
	good := strings.Join([]string{
		"# edge-id   credential   topics",
		"plant-7     cert         ^(sensors|alerts)$   # comment after the fields",
		"",
		"   " + tokenLine("ship-12", "s3cret", ".*"),
		"dock-1 cert",
	}, "\n")
	f, err := parseEdgesFile([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.byID) != 3 || len(f.tokens) != 1 {
		t.Fatalf("parsed %d edges, %d token edges; want 3 and 1", len(f.byID), len(f.tokens))
	}
	p := f.byID["plant-7"]
	if p.kind != credCert || !p.allows("sensors") || !p.allows("alerts") || p.allows("sensors-2") || p.allows("xsensors") {
		t.Errorf("plant-7: kind %s, rule %s does not match whole names only", p.kind, p.topicsSrc)
	}
	if d := f.byID["dock-1"]; !d.allows("anything") {
		t.Error("dock-1 without a topic rule must allow every topic")
	}
	if e := f.byToken("s3cret"); e == nil || e.id != "ship-12" {
		t.Errorf("token lookup: got %v, want ship-12", e)
	}
	if e := f.byToken("s3cret "); e != nil {
		t.Error("a different token matched")
	}
	if !f.hasCert() {
		t.Error("hasCert false with cert edges")
	}
	// A rule that is only anchored by the wrapping must not leak through an
	// alternation.
	f2, err := parseEdgesFile([]byte("e1 cert a|b"))
	if err != nil {
		t.Fatal(err)
	}
	if f2.byID["e1"].allows("ab") || !f2.byID["e1"].allows("b") {
		t.Error("rule a|b must match exactly a or b")
	}
}

func TestParseEdgesFileErrors(t *testing.T) {
	hex64 := strings.Repeat("ab", 32)
	cases := []struct{ name, text, want string }{
		{"empty", "# nothing\n\n", "no edges"},
		{"one field", "plant-7", "line 1: want"},
		{"four fields", "plant-7 cert .* extra", "line 1: too many fields"},
		{"bad id", "plant/7 cert", "line 1: edge id"},
		{"bad credential", "plant-7 password", "line 1: credential must be"},
		{"bad algo", "plant-7 token:md5:" + hex64, "line 1: credential must be"},
		{"short hash", "plant-7 token:sha256:abcd", "line 1: token hash must be 64 hex digits"},
		{"not hex", "plant-7 token:sha256:" + strings.Repeat("zz", 32), "token hash"},
		{"duplicate id", "a cert\nb cert\na cert", "line 3: edge a is listed twice"},
		{"shared token", "a token:sha256:" + hex64 + "\nb token:sha256:" + hex64, "line 2: edges a and b have the same token"},
		{"bad regex", "a cert (", "line 1: topic regex"},
		{"unbalanced regex", "a cert x)|(.*", "line 1: topic regex"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseEdgesFile([]byte(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), hex64) {
				t.Errorf("error shows the token hash: %v", err)
			}
		})
	}
}

// FuzzParseEdgesFile: the parser never panics, and whatever it accepts is
// consistent: valid ids, one entry per id, every token edge findable.
func FuzzParseEdgesFile(f *testing.F) {
	f.Add([]byte("plant-7 cert ^(sensors|alerts)$\n" + tokenLine("ship-12", "t", ".*")))
	f.Add([]byte("# c\n\n a cert\n"))
	f.Add([]byte("a token:sha256:" + strings.Repeat("0", 64) + " (x|y)+"))
	f.Add([]byte("a cert \x00\xff"))
	f.Add([]byte(strings.Repeat("a cert\n", 3)))
	f.Fuzz(func(t *testing.T, b []byte) {
		ef, err := parseEdgesFile(b)
		if err != nil {
			if ef != nil {
				t.Fatal("error with a result")
			}
			return
		}
		if len(ef.byID) == 0 {
			t.Fatal("accepted a file without edges")
		}
		tokens := 0
		for id, e := range ef.byID {
			if e.id != id || validEdge(id) != nil {
				t.Fatalf("entry %q under %q", e.id, id)
			}
			if e.topics == nil {
				t.Fatalf("edge %s without a topic rule", id)
			}
			if e.kind == credToken {
				tokens++
			} else if e.kind != credCert {
				t.Fatalf("edge %s of kind %q", id, e.kind)
			}
		}
		if tokens != len(ef.tokens) {
			t.Fatalf("%d token edges, %d in the token list", tokens, len(ef.tokens))
		}
	})
}

func validEdge(id string) error { return wire.ValidEdgeID(id) }
