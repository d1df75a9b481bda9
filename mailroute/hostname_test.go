package mailroute

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

// fakeHost is a machine as deriveHostname sees it.
type fakeHost struct {
	name     string
	hosts    map[string][]string // host name → addresses
	ptr      map[string][]string // address → names
	outbound string
}

func (f fakeHost) sources() hostnameSources {
	return hostnameSources{
		hostname: func() (string, error) {
			if f.name == "" {
				return "", errors.New("no host name")
			}
			return f.name, nil
		},
		lookupHost: func(_ context.Context, h string) ([]string, error) {
			if a, ok := f.hosts[h]; ok {
				return a, nil
			}
			return nil, errors.New("not found")
		},
		lookupAddr: func(_ context.Context, a string) ([]string, error) {
			if n, ok := f.ptr[a]; ok {
				return n, nil
			}
			return nil, errors.New("not found")
		},
		outbound: func() (netip.Addr, error) {
			if f.outbound == "" {
				return netip.Addr{}, errors.New("no route")
			}
			return netip.ParseAddr(f.outbound)
		},
	}
}

func TestDeriveHostname(t *testing.T) {
	tests := []struct {
		name     string
		host     fakeHost
		want     string
		wantHow  string // part of the explanation
		wantFail bool
	}{
		{"fully qualified host name", fakeHost{name: "Mail.Example.NET", outbound: "192.0.2.7"}, "mail.example.net", "system host name", false},
		{"short name, /etc/hosts gives the FQDN", fakeHost{name: "vm",
			hosts: map[string][]string{"vm": {"127.0.1.1", "192.0.2.7"}},
			ptr:   map[string][]string{"127.0.1.1": {"vm.localdomain."}, "192.0.2.7": {"vm.example.net."}},
		}, "vm.example.net", "192.0.2.7", false},
		{"short name, only loopback and localhost names", fakeHost{name: "vm",
			hosts:    map[string][]string{"vm": {"127.0.0.1"}},
			ptr:      map[string][]string{"127.0.0.1": {"localhost"}},
			outbound: "192.0.2.7",
		}, "[192.0.2.7]", `"vm" is not fully qualified`, false},
		{"IPv6 outbound address", fakeHost{name: "localhost", outbound: "2001:db8::7"}, "[IPv6:2001:db8::7]", "outbound", false},
		{"nothing at all", fakeHost{name: "vm", outbound: "127.0.0.1"}, "", "", true},
		{"no host name, no route", fakeHost{}, "", "", true},
	}
	for _, tt := range tests {
		name, how, err := deriveHostname(context.Background(), tt.host.sources())
		if tt.wantFail {
			if err == nil || !strings.Contains(err.Error(), "Config.Hostname") {
				t.Errorf("%s: %q, %v; want an error pointing at Config.Hostname", tt.name, name, err)
			}
			continue
		}
		if err != nil || name != tt.want || !strings.Contains(how, tt.wantHow) {
			t.Errorf("%s: %q (%s), %v; want %q (…%s…)", tt.name, name, how, err, tt.want, tt.wantHow)
		}
		if _, err := checkHostname(name); err != nil {
			t.Errorf("%s: derived %q that New refuses: %v", tt.name, name, err)
		}
	}
}

// The default Mailer says which name it derived, in one log line.
func TestDefaultMailerSaysItsName(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	m, err := newDefaultMailer(fakeHost{name: "vm", outbound: "192.0.2.7"}.sources(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.hostname != "[192.0.2.7]" {
		t.Errorf("EHLO name %q", m.hostname)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "EHLO [192.0.2.7]") || !strings.Contains(lines[0], "Config.Hostname") {
		t.Errorf("log:\n%s", buf.String())
	}
}
