// Package redact hides secrets in target strings — URLs, URLs missing
// their scheme, Key=Value;… connection strings, and anything malformed in
// between — before they reach logs, errors or String output ("Secrets
// never leak" in docs/ARCHITECTURE.md). There is one rule, Target, for
// every place a target can appear; it never parses, so malformed input is
// masked too. When in doubt, it masks.
package redact

import "strings"

// Mask replaces a secret.
const Mask = "***"

// Target returns s with every part that a parser could take as a
// password, key, signature or token replaced by Mask:
//
//   - the value of every Key=Value pair whose key names a secret
//     (SharedAccessKey, SharedAccessSignature, AccountKey, Key, sig, and
//     any key containing "password", "secret" or "token"; compared without
//     case), wherever it stands — a connection string, a URL query, a
//     signature's fields. A value runs to the next ';' (and, after '?', '&'
//     or a space, also to the next '&'), so padding such as a trailing '='
//     is masked with it;
//   - the password of every user-info part: after each "scheme://",
//     everything between the first ':' and the LAST '@' before the next
//     URL — also an '@' past a '/', since a password may hold an unescaped
//     '/' (or even "://"); and,
//     in a string with no "://" at all (a scheme forgotten, as in
//     "guest:pw@host:5672"), everything between the first ':' and the last
//     '@'.
//
// Target never fails and never panics, whatever s holds.
func Target(s string) string {
	return userInfo(keyValues(s))
}

// keyValues masks the values of secret keys.
func keyValues(s string) string {
	var b strings.Builder
	last := 0 // s[last:] is not yet copied
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			continue
		}
		start := i
		for start > 0 && !isSeparator(s[start-1]) {
			start--
		}
		if !isSecretKey(strings.TrimSpace(s[start:i])) {
			continue
		}
		stops := ";"
		if start > 0 && strings.IndexByte("?& \t\n", s[start-1]) >= 0 {
			stops = ";&"
		}
		end := len(s)
		if j := strings.IndexAny(s[i+1:], stops); j >= 0 {
			end = i + 1 + j
		}
		b.WriteString(s[last : i+1])
		b.WriteString(Mask)
		last = end
		i = end - 1
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// isSeparator reports whether c ends the key of a Key=Value pair when
// reading backwards from its '='.
func isSeparator(c byte) bool {
	return strings.IndexByte(";&?, \t\r\n", c) >= 0
}

// isSecretKey reports whether a connection-string key or query parameter
// holds a secret (compared case-insensitively).
func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	switch k {
	case "sharedaccesskey", "sharedaccesssignature", "accountkey", "key", "sig":
		return true
	}
	return strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token")
}

// userInfo masks the passwords of user-info parts. s is cut into regions
// at each "://"; in each region (and in the text before the first one)
// everything between the first ':' and the last '@' is a password. Which
// "://" start a URL is in doubt — one may sit inside a password
// ("u:a://b@h") — so it masks what either reading finds: cutting at every
// "://", and cutting only where a scheme stands after a separator.
func userInfo(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	masked := make([]bool, len(s))
	markRegions(s, masked, func(from int) int {
		if j := strings.Index(s[from:], "://"); j >= 0 {
			return from + j
		}
		return -1
	})
	markRegions(s, masked, func(from int) int { return nextURL(s, from) })
	var b strings.Builder
	for i := 0; i < len(s); {
		if !masked[i] {
			b.WriteByte(s[i])
			i++
			continue
		}
		for i < len(s) && masked[i] {
			i++
		}
		b.WriteString(Mask)
	}
	return b.String()
}

// markRegions cuts s where next finds a "://" and marks, in each region,
// the bytes between its first ':' and its last '@'.
func markRegions(s string, masked []bool, next func(from int) int) {
	from := 0
	for {
		cut := next(from)
		end := cut
		if end < 0 {
			end = len(s)
		}
		region := s[from:end]
		if at := strings.LastIndexByte(region, '@'); at >= 0 {
			if colon := strings.IndexByte(region[:at], ':'); colon >= 0 {
				for i := from + colon + 1; i < from+at; i++ {
					masked[i] = true
				}
			}
		}
		if cut < 0 {
			return
		}
		from = cut + 3
	}
}

// nextURL returns the index of the first "://" at or after from that ends
// a scheme standing at the start of s or after a separator ("amqp://",
// ",amqps://", "Endpoint=sb://"), or -1. A "://" inside a password
// ("u:a://b@h") does not start a URL.
func nextURL(s string, from int) int {
	for {
		j := strings.Index(s[from:], "://")
		if j < 0 {
			return -1
		}
		i := from + j
		k := i
		for k > 0 && isSchemeChar(s[k-1]) {
			k--
		}
		if k < i && isLetter(s[k]) && (k == 0 || strings.IndexByte(",;= \t\r\n\"'(<[", s[k-1]) >= 0) {
			return i
		}
		from = i + 3
	}
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isSchemeChar(c byte) bool {
	return isLetter(c) || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'
}
