// Package secrettest checks, for tests and fuzzers, that no rendering of a
// value — an error, a Config, a token — shows a secret: every fmt verb a
// caller might use and slog's text and JSON handlers.
package secrettest

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Renderings returns v printed with %v, %+v, %#v, %s and %q, its Error,
// String and GoString where it has them, and the lines slog's text and
// JSON handlers write for a record that carries it as an attribute.
func Renderings(v any) []string {
	if v == nil {
		return nil
	}
	out := []string{
		fmt.Sprintf("%v", v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v),
		fmt.Sprintf("%s", v), fmt.Sprintf("%q", v),
	}
	if e, ok := v.(error); ok {
		out = append(out, e.Error())
	}
	if s, ok := v.(fmt.Stringer); ok {
		out = append(out, s.String())
	}
	if g, ok := v.(fmt.GoStringer); ok {
		out = append(out, g.GoString())
	}
	var buf bytes.Buffer
	opts := HandlerOptions()
	slog.New(slog.NewTextHandler(&buf, opts)).Debug("m", "v", v)
	slog.New(slog.NewJSONHandler(&buf, opts)).Debug("m", "v", v)
	return append(out, buf.String())
}

// Leak returns the first rendering of any of vs that contains secret, and
// whether there is one. An empty secret never leaks.
func Leak(secret string, vs ...any) (string, bool) {
	if secret == "" {
		return "", false
	}
	for _, v := range vs {
		for _, r := range Renderings(v) {
			if strings.Contains(r, secret) {
				return r, true
			}
		}
	}
	return "", false
}

// Checkable reports whether a fuzzed input holding secret once can be
// checked by looking for the secret in renderings: the input must be
// valid UTF-8 of printable runes, and the secret must hold no quote or
// backslash, so that the escaping of %q and %#v cannot make up the
// secret's text from its neighbours ("\xe0" followed by "000"); and the
// secret must stand exactly once in the input, so that it appears
// nowhere that is not secret.
func Checkable(input, secret string) bool {
	if !utf8.ValidString(input) || strings.ContainsAny(secret, "\\\"") || strings.Count(input, secret) != 1 {
		return false
	}
	for _, r := range input {
		if !unicode.IsPrint(r) && r != ' ' {
			return false
		}
	}
	return true
}

// HandlerOptions are slog handler options for tests that look for secrets
// in log output: every level, and no time attribute (its digits would
// match a secret such as "0000").
func HandlerOptions() *slog.HandlerOptions {
	return &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
}

// Placement is a position in a target string where a parser could take a
// secret as a password, key or signature: Form holds "%s" where the secret
// goes, and Stops are the bytes a secret there cannot hold (they end it
// for every parser).
type Placement struct{ Form, Stops string }

// Place builds one fuzz case: secret, between markers that keep it from
// matching the text beside it in an output, put into p between prefix and
// suffix. It returns the input and the marked secret to look for, and
// false when the case cannot be checked: an empty secret, one holding a
// stop, '*' (the mask's own character) or "://", or an input Checkable
// refuses.
func Place(p Placement, prefix, secret, suffix string) (input, marked string, ok bool) {
	if secret == "" || strings.ContainsAny(secret, p.Stops+"*") || strings.Contains(secret, "://") {
		return "", "", false
	}
	marked = "S3x" + secret + "Zq9"
	input = prefix + strings.Replace(p.Form, "%s", marked, 1) + suffix
	return input, marked, Checkable(input, marked)
}
