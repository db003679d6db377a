package gateway

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nozzle-ai/nozzle"
)

func FuzzCheckPassword(f *testing.F) {
	good, err := hashPassword("correct horse battery")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(good), "correct horse battery")
	f.Add("$argon2id$v=19$m=1,t=1,p=1$AAAA$AAAA", "x")
	f.Add("$argon2id$v=19$m=4294967295,t=1,p=1$AAAA$AAAA", "x")
	f.Add("$bcrypt$whatever", "")
	f.Fuzz(func(t *testing.T, hash, pw string) {
		// Never panics, never takes unbounded memory or time; only the
		// right password matches a real hash.
		ok := checkPassword([]byte(hash), pw)
		if ok && hash == string(good) && pw != "correct horse battery" {
			t.Fatalf("%q matched", pw)
		}
	})
}

var sessionFixture = nozzle.Session{ID: "ses_fuzz", UserID: "usr_fuzz", ExpiresAt: time.Now().Add(time.Hour)}

func FuzzParseSession(f *testing.F) {
	cs := &console{cfg: ConsoleConfig{SigningKey: []byte("fuzz signing key of at least 32 bytes")}.withDefaults()}
	tok, err := cs.signSession(&sessionFixture)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add(strings.Repeat("a.", 3000))
	f.Fuzz(func(t *testing.T, s string) {
		cl, err := cs.parseSession(s)
		if err == nil && s != tok && (cl.ID != sessionFixture.ID || cl.Subject != sessionFixture.UserID) {
			t.Fatalf("accepted a token it did not sign: %q", s)
		}
	})
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/console/usage?period=7d": "/console/usage?period=7d",
		"//evil.example/console/":  "",
		"/console/../admin":        "",
		"https://evil.example":     "",
		"/console/api/keys":        "",
		"/console/login?next=x":    "",
		"/console/\\evil":          "",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoginLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLoginLimiter(2, 3, time.Minute, func() time.Time { return now })
	l.fail("A@x.test", "1.1.1.1")
	if l.blocked("a@x.test", "1.1.1.1") != 0 {
		t.Fatal("blocked after one failure")
	}
	l.fail("a@x.test", "1.1.1.1")
	if w := l.blocked("a@X.test", "2.2.2.2"); w != time.Minute {
		t.Fatalf("email not blocked case-insensitively: %v", w)
	}
	l.fail("b@x.test", "1.1.1.1")
	if l.blocked("c@x.test", "1.1.1.1") == 0 {
		t.Fatal("address not blocked after 3 failures")
	}
	now = now.Add(61 * time.Second)
	if l.blocked("a@x.test", "1.1.1.1") != 0 {
		t.Fatal("still blocked after the window")
	}
}

func TestLoginLimiterCountsAttemptsInFlight(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLoginLimiter(2, 3, time.Minute, func() time.Time { return now })
	for i := range 2 {
		if w := l.attempt("a@x.test", "1.1.1.1"); w != 0 {
			t.Fatalf("attempt %d blocked: %v", i, w)
		}
	}
	if l.attempt("a@x.test", "1.1.1.1") == 0 {
		t.Fatal("a third attempt in flight was let through")
	}
	// A success forgets the email's count and takes back the address's.
	l.succeed("a@x.test", "1.1.1.1")
	l.succeed("b@x.test", "1.1.1.1")
	for _, e := range []string{"c@x.test", "d@x.test", "e@x.test"} {
		if l.attempt(e, "1.1.1.1") != 0 {
			t.Fatal("successful attempts still count against the address")
		}
	}
	if l.attempt("f@x.test", "1.1.1.1") == 0 {
		t.Fatal("address not blocked after 3 attempts")
	}
}

// A device's sign-ins count against the device alone, in flight
// included, with the per-email limit: the email's and the address's
// counts neither block them nor grow with them.
// A device cookie is valid only as this console signed it: for its
// email (in any case), until its expiry.
func FuzzParseDevice(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	cs := &console{cfg: ConsoleConfig{SigningKey: []byte("fuzz signing key of at least 32 bytes"), Clock: func() time.Time { return now }}.withDefaults(),
		deviceKey: []byte("fuzz device key")}
	valid := cs.deviceToken("abcdefghijklmnopqrstuvwx", "User@Example.com", now.Add(time.Hour))
	if got := cs.parseDevice(valid, "user@example.COM"); got != "abcdefghijklmnopqrstuvwx" {
		f.Fatalf("valid cookie: %q", got)
	}
	for _, bad := range []struct{ v, email string }{
		{valid, "other@example.com"},
		{cs.deviceToken("abcdefghijklmnopqrstuvwx", "user@example.com", now), "user@example.com"},
		{strings.Replace(valid, ".", "..", 1), "user@example.com"},
		{valid + "x", "user@example.com"},
	} {
		if got := cs.parseDevice(bad.v, bad.email); got != "" {
			f.Errorf("parseDevice(%q, %q) = %q, want none", bad.v, bad.email, got)
		}
	}
	f.Add(valid, "user@example.com")
	f.Add("a.b.c.d", "")
	f.Add("....", "x")
	f.Fuzz(func(t *testing.T, v, email string) {
		id := cs.parseDevice(v, email)
		if id == "" {
			return
		}
		// What parses is what the console signed: same id, email and
		// HMAC, an expiry still ahead.
		parts := strings.Split(v, ".")
		exp, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil || !now.Before(time.Unix(exp, 0)) || id != parts[0] ||
			cs.deviceToken(id, email, time.Unix(exp, 0)) != v {
			t.Fatalf("parseDevice(%q, %q) = %q", v, email, id)
		}
	})
}

func TestLoginLimiterDevice(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLoginLimiter(2, 3, time.Minute, func() time.Time { return now })
	for range 3 {
		l.fail("a@x.test", "1.1.1.1")
	}
	if l.blocked("a@x.test", "2.2.2.2") == 0 || l.blocked("b@x.test", "1.1.1.1") == 0 {
		t.Fatal("email and address not blocked")
	}
	for i := range 2 {
		if w := l.attemptDevice("dev1"); w != 0 {
			t.Fatalf("device attempt %d blocked: %v", i, w)
		}
	}
	if w := l.attemptDevice("dev1"); w != time.Minute {
		t.Fatalf("a third device attempt in flight: wait %v", w)
	}
	if l.attemptDevice("dev2") != 0 {
		t.Fatal("another device blocked by the first's count")
	}
	l.succeedDevice("dev1")
	if l.attemptDevice("dev1") != 0 {
		t.Fatal("a device still blocked after signing in")
	}
	if c := l.counts[emailKey("a@x.test")]; c == nil || c.n != 3 {
		t.Fatalf("the email's count changed with the device's: %+v", c)
	}
	if c := l.counts[addrKey("1.1.1.1")]; c == nil || c.n != 3 {
		t.Fatalf("the address's count changed with the device's: %+v", c)
	}
	now = now.Add(61 * time.Second)
	l.attemptDevice("dev2")
	if l.attemptDevice("dev2") != 0 {
		t.Fatal("device still counted after the window")
	}
}

// TestFormatUSD: the console shows amounts as nozzle.FormatUSD does,
// with a typographic minus.
func TestFormatUSD(t *testing.T) {
	for v, want := range map[float64]string{
		0: "$0.00", 0.004684: "$0.00468", 0.19: "$0.19", 1234.5: "$1,234.50", -0.25: "−$0.25", -1e-12: "−<$0.000000001",
	} {
		if got := formatUSD(v); got != want {
			t.Errorf("formatUSD(%g) = %q, want %q", v, got, want)
		}
	}
}

func TestAdapterStorage(t *testing.T) {
	for _, tc := range []struct {
		st      adapterStorage
		capped  bool
		full    bool
		free    int64
		percent float64
	}{
		{adapterStorage{Used: 0, Quota: 100}, true, false, 100, 0},
		{adapterStorage{Used: 25, Quota: 100}, true, false, 75, 25},
		{adapterStorage{Used: 100, Quota: 100}, true, true, 0, 100},
		{adapterStorage{Used: 300, Quota: 100}, true, true, 0, 100}, // past a quota lowered since
		{adapterStorage{Used: 300, Quota: 0}, false, false, 0, 0},
		{adapterStorage{Used: 300, Quota: -1}, false, false, 0, 0}, // no cap
	} {
		if got := tc.st.Capped(); got != tc.capped {
			t.Errorf("%+v: Capped %v", tc.st, got)
		}
		if got := tc.st.Full(); got != tc.full {
			t.Errorf("%+v: Full %v", tc.st, got)
		}
		if got := tc.st.Free(); got != tc.free {
			t.Errorf("%+v: Free %d, want %d", tc.st, got, tc.free)
		}
		if got := tc.st.Percent(); got != tc.percent {
			t.Errorf("%+v: Percent %v, want %v", tc.st, got, tc.percent)
		}
	}
}
