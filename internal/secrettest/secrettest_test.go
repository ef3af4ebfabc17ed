package secrettest

import (
	"errors"
	"testing"
)

func TestPlaceAndLeak(t *testing.T) {
	p := Placement{Form: "amqp://u:%s@h/", Stops: "@"}
	in, marked, ok := Place(p, "", "pw", "")
	if !ok || in != "amqp://u:S3xpwZq9@h/" || marked != "S3xpwZq9" {
		t.Fatalf("Place = %q, %q, %v", in, marked, ok)
	}
	for _, bad := range []string{"", "p@w", "p*w", "a://b"} {
		if _, _, ok := Place(p, "", bad, ""); ok {
			t.Errorf("Place accepted secret %q", bad)
		}
	}
	if _, _, ok := Place(p, "\xff", "pw", ""); ok {
		t.Error("Place accepted invalid UTF-8")
	}
	if _, ok := Leak(marked, errors.New("dial "+in)); !ok {
		t.Error("Leak missed the secret in an error")
	}
	if _, ok := Leak(marked, errors.New("dial amqp://u:***@h/")); ok {
		t.Error("Leak reported a masked secret")
	}
}
