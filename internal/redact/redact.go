// Package redact hides secrets in target strings — URLs, URLs missing
// their scheme, Key=Value;… connection strings, and anything malformed in
// between — before they reach logs, errors or String output (DESIGN.md
// rule 7). There is one rule, Target, for every place a target can
// appear; it never parses, so malformed input is masked too. When in
// doubt, it masks.
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
//   - the password of every user-info part: after each "://", everything
//     between the first ':' and the LAST '@' before the next "://" — also
//     an '@' past a '/', since a password may hold an unescaped '/'; and,
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

// userInfo masks the passwords of user-info parts.
func userInfo(s string) string {
	if !strings.Contains(s, "://") {
		if at := strings.LastIndexByte(s, '@'); at >= 0 {
			return maskPassword(s[:at]) + s[at:]
		}
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		seg := s
		if next := strings.Index(s, "://"); next >= 0 {
			seg = s[:next]
		}
		if at := strings.LastIndexByte(seg, '@'); at >= 0 {
			b.WriteString(maskPassword(seg[:at]))
			s = s[at:]
		}
	}
}

// maskPassword masks everything after the first ':' of a user-info part.
func maskPassword(ui string) string {
	user, _, ok := strings.Cut(ui, ":")
	if !ok {
		return ui
	}
	return user + ":" + Mask
}
