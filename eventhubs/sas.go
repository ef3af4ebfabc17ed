package eventhubs

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/isobroker/broker/internal/redact"
)

// CBS token types.
const (
	tokenTypeSAS = "servicebus.windows.net:sastoken"
	tokenTypeJWT = "jwt"
)

// SASToken returns a shared access signature for resource (an audience
// such as "amqps://ns.servicebus.windows.net/hub") signed with the named
// key and valid until expiry, in the form the service expects:
// "SharedAccessSignature sr=…&sig=…&se=…&skn=…". The result is a secret.
func SASToken(resource, keyName, key string, expiry time.Time) string {
	sr := strings.ToLower(url.QueryEscape(resource))
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(sr + "\n" + se))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se + "&skn=" + url.QueryEscape(keyName)
}

// token is what put-token sends.
type token struct {
	typ    string
	value  string    // secret
	expiry time.Time // zero: never expires (a fixed SAS), never refreshed
}

// String never shows the token value.
func (t token) String() string {
	return fmt.Sprintf("token{type=%s expires=%s}", t.typ, t.expiry.UTC().Format(time.RFC3339))
}

// GoString is String, so that %#v hides the value too.
func (t token) GoString() string { return t.String() }

// LogValue makes slog print String.
func (t token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// String shows when the token expires, never the token.
func (t AccessToken) String() string {
	return fmt.Sprintf("AccessToken{Token:%s ExpiresOn:%s}", redact.Mask, t.ExpiresOn.UTC().Format(time.RFC3339))
}

// GoString is String, so that %#v hides the token too.
func (t AccessToken) GoString() string { return t.String() }

// LogValue makes slog print String.
func (t AccessToken) LogValue() slog.Value { return slog.StringValue(t.String()) }

// getToken returns a token for audience from the configured credentials.
func (c *Config) getToken(ctx context.Context, audience string) (token, error) {
	switch {
	case c.Credential != nil:
		at, err := c.Credential.GetToken(ctx, TokenScope)
		if err != nil {
			return token{}, fmt.Errorf("getting an Azure AD token: %w", err)
		}
		if at.Token == "" {
			return token{}, fmt.Errorf("the TokenCredential returned an empty token")
		}
		return token{typ: tokenTypeJWT, value: at.Token, expiry: at.ExpiresOn}, nil
	case c.SharedAccessSignature != "":
		return token{typ: tokenTypeSAS, value: c.SharedAccessSignature}, nil
	default:
		exp := time.Now().Add(c.TokenTTL)
		return token{typ: tokenTypeSAS, value: SASToken(audience, c.KeyName, c.Key, exp), expiry: exp}, nil
	}
}
