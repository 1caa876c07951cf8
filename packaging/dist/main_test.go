package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestPackageVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":             "1.2.3",
		"1.2.3":              "1.2.3",
		"v1.2.3-rc.1":        "1.2.3+rc.1",
		"v1.2.3-4-gabc1234":  "1.2.3+4.gabc1234",
		"v1.2.3-dirty":       "1.2.3+dirty",
		"e371c19":            "0.0.0~gite371c19",
		"e371c19-dirty":      "0.0.0~gite371c19.dirty",
		"dev":                "0.0.0~gitdev",
		"":                   "0.0.0~git",
		"v2.0.0_beta/../x y": "2.0.0.beta.x.y",
	} {
		if got := PackageVersion(in); got != want {
			t.Errorf("PackageVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--date", "yesterday"}, "parse --date"},
		{[]string{"--targets", "amd64,mips"}, `unknown target "mips"`},
		{[]string{"--version", "1.0 beta"}, "without spaces"},
	} {
		err := run(context.Background(), append(tc.args, "--out", t.TempDir()), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
