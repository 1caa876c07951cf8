package aggregator

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Bounds of the edges file (and so of the work of a reload): room for about
// 100,000 token edges.
const (
	MaxEdgesFileLines = 200_000
	MaxEdgesFileBytes = 32 << 20
)

// credential kinds of an edges file entry.
const (
	credCert  = "cert"
	credToken = "token"
)

// edgeEntry is one line of the edges file: an edge allowed in, how it
// proves who it is, and the source topics it may send.
type edgeEntry struct {
	id     string
	kind   string   // credCert or credToken
	hash   [32]byte // SHA-256 of the bearer token (credToken)
	topics *regexp.Regexp
	// topicsSrc is the regex as written, for logs.
	topicsSrc string
}

// allows reports whether the edge may send records of a source topic.
func (e *edgeEntry) allows(topic string) bool { return e.topics.MatchString(topic) }

// edgesFile is a parsed --edges-file.
type edgesFile struct {
	byID   map[string]*edgeEntry
	tokens []*edgeEntry // in file order
}

// ids returns the edge ids the file allows, sorted.
func (f *edgesFile) ids() []string {
	out := make([]string, 0, len(f.byID))
	for id := range f.byID {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// certEdges reports whether any edge authenticates with a certificate.
func (f *edgesFile) hasCert() bool {
	for _, e := range f.byID {
		if e.kind == credCert {
			return true
		}
	}
	return false
}

// byToken returns the token edge whose hash matches the token. It compares
// against every entry in constant time, so the time taken does not depend on
// which entry (if any) matched.
func (f *edgesFile) byToken(token string) *edgeEntry {
	sum := sha256.Sum256([]byte(token))
	var found *edgeEntry
	for _, e := range f.tokens {
		if subtle.ConstantTimeCompare(sum[:], e.hash[:]) == 1 {
			found = e
		}
	}
	return found
}

// parseEdgesFile parses an edges file:
//
//	# edge-id   credential                       topics (regex; optional, default .*)
//	plant-7     cert                             ^(sensors|alerts)$
//	ship-12     token:sha256:<64 hex digits>     .*
//
// Fields are separated by blanks; "#" starts a comment. The topics regex
// must match the whole source topic name. Errors name the line.
func parseEdgesFile(b []byte) (*edgesFile, error) {
	f := &edgesFile{byID: make(map[string]*edgeEntry)}
	hashes := make(map[[32]byte]string)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		if n > MaxEdgesFileLines {
			return nil, fmt.Errorf("more than %d lines", MaxEdgesFileLines)
		}
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("line %d: %s", n, fmt.Sprintf(format, args...))
		}
		if len(fields) < 2 {
			return nil, bad("want \"EDGE-ID CREDENTIAL [TOPIC-REGEX]\", got only %q", fields[0])
		}
		if len(fields) > 3 {
			return nil, bad("too many fields (%d); a topic regex must not contain blanks (use \\s)", len(fields))
		}
		e := &edgeEntry{id: fields[0], topicsSrc: ".*"}
		if err := wire.ValidEdgeID(e.id); err != nil {
			return nil, bad("edge id: %v", err)
		}
		if _, dup := f.byID[e.id]; dup {
			return nil, bad("edge %s is listed twice", e.id)
		}
		cred := fields[1]
		switch {
		case cred == credCert:
			e.kind = credCert
		case strings.HasPrefix(cred, "token:"):
			algo, h, ok := strings.Cut(strings.TrimPrefix(cred, "token:"), ":")
			if !ok || algo != "sha256" {
				return nil, bad("credential must be cert or token:sha256:<64 hex digits>")
			}
			raw, err := hex.DecodeString(h)
			if err != nil || len(raw) != sha256.Size {
				return nil, bad("token hash must be 64 hex digits (the SHA-256 of the token, e.g. from sha256sum)")
			}
			e.kind = credToken
			copy(e.hash[:], raw)
			if other, dup := hashes[e.hash]; dup {
				return nil, bad("edges %s and %s have the same token; give every edge its own", other, e.id)
			}
			hashes[e.hash] = e.id
		default:
			return nil, bad("credential must be cert or token:sha256:<64 hex digits>")
		}
		if len(fields) == 3 {
			e.topicsSrc = fields[2]
		}
		// Compiled alone first: only a regex that is whole on its own is
		// safely anchored by wrapping it.
		if _, err := regexp.Compile(e.topicsSrc); err != nil {
			return nil, bad("topic regex %q: %v", e.topicsSrc, err)
		}
		re, err := regexp.Compile(`^(?:` + e.topicsSrc + `)$`)
		if err != nil {
			return nil, bad("topic regex %q: %v", e.topicsSrc, err)
		}
		e.topics = re
		f.byID[e.id] = e
		if e.kind == credToken {
			f.tokens = append(f.tokens, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", n+1, err)
	}
	if len(f.byID) == 0 {
		return nil, fmt.Errorf("no edges in it; an empty edges file would refuse every edge")
	}
	return f, nil
}
