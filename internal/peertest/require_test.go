package peertest

import (
	"strings"
	"testing"
)

func fullEnv() map[string]string {
	return map[string]string{
		"MAILROUTE_DNS":               "127.0.0.1:5353",
		"MAILROUTE_POSTFIX_PORT":      "2525",
		"MAILROUTE_POSTFIX_MAILDIR":   "/p/postfix/mail/inbound",
		"MAILROUTE_POSTFIX_CERT":      "/p/postfix/tls/cert.pem",
		"MAILROUTE_SUBMISSION_ADDR":   "127.0.0.1:5870",
		"MAILROUTE_SUBMISSIONS_ADDR":  "127.0.0.1:4650",
		"MAILROUTE_SUBMITTED_MAILDIR": "/p/postfix/mail/submitted",
		"MAILROUTE_SMARTHOST_USER":    "testuser@example.org",
		"MAILROUTE_SMARTHOST_PASS":    "testpass",

		"MAILROUTE_MADDY_SUBMISSION_ADDR":  "127.0.0.1:5871",
		"MAILROUTE_MADDY_SUBMISSIONS_ADDR": "127.0.0.1:4651",
		"MAILROUTE_MADDY_STORE":            "/p/maddy/store/submitted",
		"MAILROUTE_MADDY_CERT":             "/p/maddy/tls/cert.pem",
	}
}

func TestLoad(t *testing.T) {
	vars := fullEnv()
	e, err := load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := Env{
		DNS: "127.0.0.1:5353", PostfixPort: 2525,
		PostfixMaildir: "/p/postfix/mail/inbound", PostfixCert: "/p/postfix/tls/cert.pem",
		SubmissionAddr: "127.0.0.1:5870", SubmissionsAddr: "127.0.0.1:4650",
		SubmittedMaildir: "/p/postfix/mail/submitted",
		SmarthostUser:    "testuser@example.org", SmarthostPass: "testpass",

		MaddySubmissionAddr: "127.0.0.1:5871", MaddySubmissionsAddr: "127.0.0.1:4651",
		MaddyStore: "/p/maddy/store/submitted", MaddyCert: "/p/maddy/tls/cert.pem",
		// Postfix's credentials, since MAILROUTE_MADDY_USER/PASS are unset.
		MaddyUser: "testuser@example.org", MaddyPass: "testpass",
	}
	if e != want {
		t.Fatalf("load = %+v\nwant %+v", e, want)
	}
	if got := e.PostfixAddr("127.0.0.2"); got != "127.0.0.2:2525" {
		t.Errorf("PostfixAddr = %q", got)
	}

	// maddy's own credentials, when peers.sh prints them.
	vars["MAILROUTE_MADDY_USER"], vars["MAILROUTE_MADDY_PASS"] = "other@example.org", "otherpass"
	if e, err = load(func(k string) string { return vars[k] }); err != nil {
		t.Fatal(err)
	}
	if e.MaddyUser != "other@example.org" || e.MaddyPass != "otherpass" || e.SmarthostUser != "testuser@example.org" {
		t.Errorf("maddy credentials: %+v", e)
	}

	delete(vars, "MAILROUTE_DNS")
	delete(vars, "MAILROUTE_SMARTHOST_PASS")
	delete(vars, "MAILROUTE_MADDY_STORE")
	_, err = load(func(k string) string { return vars[k] })
	if err == nil || !strings.Contains(err.Error(), "MAILROUTE_DNS, MAILROUTE_SMARTHOST_PASS, MAILROUTE_MADDY_STORE") {
		t.Errorf("missing variables: err = %v", err)
	}

	vars = fullEnv()
	vars["MAILROUTE_POSTFIX_PORT"] = "smtp"
	if _, err := load(func(k string) string { return vars[k] }); err == nil {
		t.Error("bad port accepted")
	}
}

func TestRequireSkipsWithoutPeers(t *testing.T) {
	t.Setenv("MAILROUTE_PEERS", "")
	var ran bool
	t.Run("inner", func(t *testing.T) {
		Require(t)
		ran = true
	})
	if ran {
		t.Fatal("Require returned without MAILROUTE_PEERS=1")
	}
}

func TestProbeReportsDeadPeers(t *testing.T) {
	// Ports on 127.0.0.1 where nothing listens (port 1, tcpmux), a
	// certificate that does not exist.
	e := Env{
		DNS: "127.0.0.1:1", PostfixPort: 1, PostfixCert: t.TempDir() + "/none.pem",
		SubmissionAddr: "127.0.0.1:1", SubmissionsAddr: "127.0.0.1:1",
		MaddySubmissionAddr: "127.0.0.1:1", MaddySubmissionsAddr: "127.0.0.1:1",
		MaddyCert: t.TempDir() + "/none.pem",
	}
	err := probe(e)
	if err == nil {
		t.Fatal("probe found dead peers alive")
	}
	for _, want := range []string{"Postfix certificate", "Postfix receiver", "127.0.0.2:1", "Postfix submission", "DNS server",
		"maddy certificate", "maddy submission"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
