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
	}
	if e != want {
		t.Fatalf("load = %+v\nwant %+v", e, want)
	}
	if got := e.PostfixAddr("127.0.0.2"); got != "127.0.0.2:2525" {
		t.Errorf("PostfixAddr = %q", got)
	}

	delete(vars, "MAILROUTE_DNS")
	delete(vars, "MAILROUTE_SMARTHOST_PASS")
	_, err = load(func(k string) string { return vars[k] })
	if err == nil || !strings.Contains(err.Error(), "MAILROUTE_DNS, MAILROUTE_SMARTHOST_PASS") {
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
	}
	err := probe(e)
	if err == nil {
		t.Fatal("probe found dead peers alive")
	}
	for _, want := range []string{"Postfix certificate", "Postfix receiver", "127.0.0.2:1", "Postfix submission", "DNS server"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
