// Package redact hides secrets in URLs and connection strings before they
// reach logs or errors (DESIGN.md rule 7).
package redact

import (
	"net/url"
	"strings"
)

// Mask replaces a secret.
const Mask = "***"

// Target redacts a URL or a Key=Value;… connection string, whichever s is.
func Target(s string) string {
	if strings.Contains(s, "://") && !strings.Contains(s, ";") {
		return URL(s)
	}
	if strings.Contains(s, "=") && strings.Contains(s, ";") || strings.HasPrefix(strings.ToLower(strings.TrimSpace(s)), "endpoint=") {
		return ConnectionString(s)
	}
	return URL(s)
}

// URL replaces the password of a URL's user info, and the values of query
// parameters that name secrets, with Mask. A string that does not parse
// has everything between "://" and the last "@" masked.
func URL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		i := strings.Index(s, "://")
		j := strings.LastIndex(s, "@")
		if i >= 0 && j > i {
			return s[:i+3] + Mask + s[j:]
		}
		return s
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Mask)
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		changed := false
		for k := range q {
			if isSecretKey(k) {
				q.Set(k, Mask)
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return strings.Replace(u.String(), url.QueryEscape(Mask), Mask, -1)
}

// ConnectionString masks the values of secret keys in a
// "Key=Value;Key=Value" string.
func ConnectionString(s string) string {
	parts := strings.Split(s, ";")
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if ok && isSecretKey(strings.TrimSpace(k)) {
			parts[i] = k + "=" + Mask
		}
	}
	return strings.Join(parts, ";")
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
