package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgemirror/edgemirror/internal/units"
)

// envPrefix prefixes the environment variable of every flag:
// --buffer-max-bytes is read from EDGEMIRROR_BUFFER_MAX_BYTES.
const envPrefix = "EDGEMIRROR_"

// usageError is a bad command line: it exits with code 2 and a hint.
type usageError struct {
	message string
	hint    string
}

func (e *usageError) Error() string { return e.message }

// errHelp is returned after an explicit -h/--help: exit code 0.
var errHelp = errors.New("help requested")

// flagSpec documents one flag for the grouped --help.
type flagSpec struct {
	section string
	name    string
}

// command is a subcommand's flag set plus the order in which --help shows
// its flags.
type command struct {
	name     string
	summary  string
	example  string
	fs       *flag.FlagSet
	specs    []flagSpec
	sections []string
	// cliOnly flags are never read from the environment: a variable left
	// set must not turn a dry run into a change.
	cliOnly map[string]bool
}

func newCommand(name, summary, example string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &command{name: name, summary: summary, example: example, fs: fs}
}

// commandLineOnly marks flags that are not read from the environment.
func (c *command) commandLineOnly(names ...string) {
	if c.cliOnly == nil {
		c.cliOnly = make(map[string]bool)
	}
	for _, n := range names {
		c.cliOnly[n] = true
	}
}

func (c *command) section(s string) { c.sections = append(c.sections, s) }

func (c *command) add(name string, v flag.Value, usage string) {
	c.fs.Var(v, name, usage)
	c.specs = append(c.specs, flagSpec{section: c.sections[len(c.sections)-1], name: name})
}

func (c *command) str(p *string, name, usage string) { c.add(name, (*stringValue)(p), usage) }
func (c *command) list(p *[]string, name, usage string) {
	c.add(name, (*listValue)(p), usage)
}
func (c *command) bytes(p *int64, name, usage string)  { c.add(name, (*bytesValue)(p), usage) }
func (c *command) rate(p *int64, name, usage string)   { c.add(name, (*rateValue)(p), usage) }
func (c *command) intv(p *int, name, usage string)     { c.add(name, (*intValue)(p), usage) }
func (c *command) boolv(p *bool, name, usage string)   { c.add(name, (*boolValue)(p), usage) }
func (c *command) regex(p *string, name, usage string) { c.add(name, (*regexValue)(p), usage) }
func (c *command) duration(p *time.Duration, name, usage string) {
	c.add(name, (*durationValue)(p), usage)
}

// kvs is a repeatable KEY=VALUE flag; parse checks each pair.
func (c *command) kvs(p *map[string]string, name string, parse func(string) (string, string, error), usage string) {
	c.add(name, &kvValue{p: p, parse: parse}, usage)
}

// choice is a flag that takes one of a fixed set of words.
func (c *command) choice(p *string, name string, choices []string, usage string) {
	c.add(name, &choiceValue{p: p, choices: choices}, usage)
}

// envName returns the environment variable read for a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse reads the command line, then the environment for every flag not
// given on the command line (the command line wins).
// parseOrHelp is parse that also prints the usage to stdout when help was
// asked for (the error is still errHelp, for exit code 0).
func (c *command) parseOrHelp(args []string, getenv func(string) string, stdout io.Writer) error {
	err := c.parse(args, getenv)
	if errors.Is(err, errHelp) {
		c.usage(stdout)
	}
	return err
}

func (c *command) parse(args []string, getenv func(string) string) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			return errHelp
		}
		if a == "--" {
			break
		}
	}
	if err := c.fs.Parse(args); err != nil {
		// Name flags the way the help spells them (--name).
		msg := strings.Replace(err.Error(), "for flag -", "for --", 1)
		msg = strings.Replace(msg, "flag provided but not defined: -", "unknown flag --", 1)
		return &usageError{message: msg, hint: c.example}
	}
	if c.fs.NArg() > 0 {
		return &usageError{message: fmt.Sprintf("unexpected argument %q", c.fs.Arg(0)), hint: c.example}
	}
	set := make(map[string]bool)
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	c.fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || c.cliOnly[f.Name] {
			return
		}
		env := envName(f.Name)
		if v, ok := lookupEnv(getenv, env); ok {
			if e := f.Value.Set(v); e != nil {
				err = &usageError{message: fmt.Sprintf("invalid value %q for %s (from %s): %v", v, "--"+f.Name, env, e), hint: c.example}
			}
		}
	})
	return err
}

func lookupEnv(getenv func(string) string, name string) (string, bool) {
	if getenv == nil {
		return os.LookupEnv(name)
	}
	v := getenv(name)
	return v, v != ""
}

// usage writes the grouped help of a command.
func (c *command) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: edgemirror %s [flags]\n\n%s\n\nExample:\n  %s\n", c.name, c.summary, c.example)
	for _, sec := range c.sections {
		fmt.Fprintf(w, "\n%s:\n", sec)
		for _, s := range c.specs {
			if s.section != sec {
				continue
			}
			f := c.fs.Lookup(s.name)
			def := f.DefValue
			if def == "" {
				def = `""`
			}
			if c.cliOnly[f.Name] {
				fmt.Fprintf(w, "  --%s\n      %s\n      (default %s; command line only)\n", f.Name, f.Usage, def)
			} else {
				fmt.Fprintf(w, "  --%s\n      %s\n      (default %s; env %s)\n", f.Name, f.Usage, def, envName(f.Name))
			}
		}
	}
	fmt.Fprintf(w, "\nSizes take 64KiB, 1MiB, 2GiB (or kB, MB, GB in powers of ten); rates take 512KiB/s, 4Mbit/s or 0\n"+
		"(unlimited); durations use Go syntax (500ms, 30s, 2m). A flag given on the command line wins over its\n"+
		"environment variable.\n")
}

type stringValue string

func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) String() string     { return string(*v) }

type listValue []string

func (v *listValue) Set(s string) error {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return errors.New("empty list")
	}
	*v = out
	return nil
}
func (v *listValue) String() string { return strings.Join(*v, ",") }

type bytesValue int64

func (v *bytesValue) Set(s string) error {
	n, err := units.ParseBytes(s)
	if err != nil {
		return err
	}
	*v = bytesValue(n)
	return nil
}
func (v *bytesValue) String() string { return units.FormatBytes(int64(*v)) }

type rateValue int64

func (v *rateValue) Set(s string) error {
	n, err := units.ParseRate(s)
	if err != nil {
		return err
	}
	*v = rateValue(n)
	return nil
}
func (v *rateValue) String() string {
	if *v == 0 {
		return "0"
	}
	return units.FormatRate(int64(*v))
}

type intValue int

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a whole number")
	}
	*v = intValue(n)
	return nil
}
func (v *intValue) String() string { return strconv.Itoa(int(*v)) }

type boolValue bool

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	*v = boolValue(b)
	return nil
}
func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }

type durationValue time.Duration

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration (use Go syntax such as 500ms, 30s, 2m)")
	}
	*v = durationValue(d)
	return nil
}
func (v *durationValue) String() string { return time.Duration(*v).String() }

type regexValue string

func (v *regexValue) Set(s string) error {
	if _, err := regexp.Compile(s); err != nil {
		return fmt.Errorf("invalid regular expression: %v", err)
	}
	*v = regexValue(s)
	return nil
}
func (v *regexValue) String() string { return string(*v) }

type choiceValue struct {
	p       *string
	choices []string
}

func (v *choiceValue) Set(s string) error {
	for _, c := range v.choices {
		if s == c {
			*v.p = s
			return nil
		}
	}
	return fmt.Errorf("want one of %s", strings.Join(v.choices, ", "))
}

func (v *choiceValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

type int64Value int64

func (v *int64Value) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("not a whole number")
	}
	*v = int64Value(n)
	return nil
}
func (v *int64Value) String() string { return strconv.FormatInt(int64(*v), 10) }

func (c *command) int64v(p *int64, name, usage string) { c.add(name, (*int64Value)(p), usage) }

// kvValue collects KEY=VALUE pairs. Each use of the flag adds pairs (a later
// one for the same key wins); one value may hold several pairs separated by
// ";", which is how the environment variable gives more than one. Values may
// contain commas (cleanup.policy=compact,delete).
type kvValue struct {
	p     *map[string]string
	parse func(string) (string, string, error)
}

func (v *kvValue) Set(s string) error {
	for _, part := range strings.Split(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, val, err := v.parse(part)
		if err != nil {
			return err
		}
		if *v.p == nil {
			*v.p = make(map[string]string)
		}
		(*v.p)[k] = val
	}
	return nil
}

func (v *kvValue) String() string {
	if v.p == nil || len(*v.p) == 0 {
		return ""
	}
	keys := make([]string, 0, len(*v.p))
	for k := range *v.p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + (*v.p)[k]
	}
	return strings.Join(keys, ";")
}
