// Package dnstest runs a real DNS server (github.com/miekg/dns) on loopback
// for tests and examples: authoritative answers for the records it is given,
// NXDOMAIN for every other name, and switches for SERVFAIL and for dropping
// queries (a timeout). It counts the queries it receives, so tests can assert
// how many lookups a piece of code made.
package dnstest

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// TTL of every record served.
const TTL = 60

// Server is a DNS server listening on UDP and TCP at the same loopback
// address. Records may be added while it runs. Safe for concurrent use.
type Server struct {
	// Addr is "127.0.0.1:port", the same for UDP and TCP.
	Addr string

	udp, tcp *dns.Server

	mu       sync.Mutex
	records  map[string][]dns.RR // by lower-case FQDN
	servfail map[string]bool     // FQDN and everything below it
	drop     map[string]bool     // FQDN and everything below it
	secure   map[string]bool     // FQDN and everything below it: answers carry AD
	queries  map[string]int      // "name TYPE" → count
	total    int
}

// Start listens on 127.0.0.1 on a free port (the same for UDP and TCP).
func Start() (*Server, error) {
	s := &Server{
		records:  make(map[string][]dns.RR),
		servfail: make(map[string]bool),
		drop:     make(map[string]bool),
		secure:   make(map[string]bool),
		queries:  make(map[string]int),
	}
	// Find a port free for both protocols: take a UDP port, then try TCP on
	// it; a few attempts cover the rare clash.
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			lastErr = err
			continue
		}
		s.Addr = pc.LocalAddr().String()
		s.udp = &dns.Server{PacketConn: pc, Handler: s}
		s.tcp = &dns.Server{Listener: ln, Handler: s}
		started := make(chan struct{}, 2)
		s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
		s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
		go s.udp.ActivateAndServe()
		go s.tcp.ActivateAndServe()
		<-started
		<-started
		return s, nil
	}
	return nil, fmt.Errorf("dnstest: no port free for both UDP and TCP: %v", lastErr)
}

// Close stops both listeners.
func (s *Server) Close() error {
	err1 := s.udp.Shutdown()
	err2 := s.tcp.Shutdown()
	if err1 != nil {
		return err1
	}
	return err2
}

func fqdn(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// Add adds records in zone-file syntax, one per string, e.g.
// "example.com. MX 10 mx.example.com.". Names without a trailing dot are
// taken as absolute. The TTL defaults to TTL. It panics on a malformed
// record: tests and examples write them as literals.
func (s *Server) Add(records ...string) *Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, text := range records {
		rr, err := dns.NewRR("$TTL " + fmt.Sprint(TTL) + "\n$ORIGIN .\n" + text)
		if err != nil {
			panic(fmt.Sprintf("dnstest: bad record %q: %v", text, err))
		}
		name := fqdn(rr.Header().Name)
		s.records[name] = append(s.records[name], rr)
	}
	return s
}

// Remove deletes every record of name, which then no longer exists
// unless a name below it does.
func (s *Server) Remove(name string) *Server {
	s.mu.Lock()
	delete(s.records, fqdn(name))
	s.mu.Unlock()
	return s
}

// MX adds MX records: host names in order, preferences 10, 20, 30…
func (s *Server) MX(domain string, hosts ...string) *Server {
	for i, h := range hosts {
		s.Add(fmt.Sprintf("%s MX %d %s", fqdn(domain), 10*(i+1), fqdn(h)))
	}
	return s
}

// NullMX publishes "0 ." (RFC 7505).
func (s *Server) NullMX(domain string) *Server {
	return s.Add(fqdn(domain) + " MX 0 .")
}

// Host adds A and AAAA records for name, one per address.
func (s *Server) Host(name string, addrs ...string) *Server {
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil {
			panic("dnstest: bad address " + a)
		}
		typ := "AAAA"
		if ip.To4() != nil {
			typ = "A"
		}
		s.Add(fmt.Sprintf("%s %s %s", fqdn(name), typ, a))
	}
	return s
}

// ServFail makes every query for name, or any name below it, answer SERVFAIL.
func (s *Server) ServFail(name string) *Server {
	s.mu.Lock()
	s.servfail[fqdn(name)] = true
	s.mu.Unlock()
	return s
}

// Drop makes every query for name, or any name below it, go unanswered.
func (s *Server) Drop(name string) *Server {
	s.mu.Lock()
	s.drop[fqdn(name)] = true
	s.mu.Unlock()
	return s
}

// Secure makes answers for name, or any name below it, carry the AD bit
// to clients that ask with DO or AD set, as a validating resolver's do for
// a signed zone (RFC 6840 §5.7). Nothing is signed: this stands in for the
// resolver the user trusts, not for DNSSEC itself.
func (s *Server) Secure(name string) *Server {
	s.mu.Lock()
	s.secure[fqdn(name)] = true
	s.mu.Unlock()
	return s
}

// Queries returns how many queries of the given type ("MX", "A", "AAAA"…)
// for name were received.
func (s *Server) Queries(name, qtype string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[fqdn(name)+" "+strings.ToUpper(qtype)]
}

// TotalQueries returns the number of queries received, of any type.
func (s *Server) TotalQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// underAny reports whether name is one of set or below one of them.
func underAny(set map[string]bool, name string) bool {
	for n := name; ; {
		if set[n] {
			return true
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return set["."]
		}
		n = n[i+1:]
	}
}

// exists reports whether name owns records or is an ancestor of a name that
// does (an empty non-terminal exists too).
func (s *Server) exists(name string) bool {
	if len(s.records[name]) > 0 {
		return true
	}
	for n := range s.records {
		if strings.HasSuffix(n, "."+name) {
			return true
		}
	}
	return false
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)

	s.mu.Lock()
	s.total++
	s.queries[name+" "+dns.TypeToString[q.Qtype]]++
	if underAny(s.drop, name) {
		s.mu.Unlock()
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	switch {
	case underAny(s.servfail, name):
		m.Rcode = dns.RcodeServerFailure
	default:
		s.answer(m, name, q.Qtype)
		if opt := req.IsEdns0(); (req.AuthenticatedData || opt != nil && opt.Do()) && underAny(s.secure, name) {
			m.AuthenticatedData = true
		}
	}
	s.mu.Unlock()
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size) // sets TC when it had to drop records
	}
	w.WriteMsg(m)
}

// answer fills m for one question, following CNAMEs within the data.
func (s *Server) answer(m *dns.Msg, name string, qtype uint16) {
	for range 8 {
		if !s.exists(name) {
			if len(m.Answer) == 0 {
				m.Rcode = dns.RcodeNameError
			}
			return
		}
		var cname *dns.CNAME
		for _, rr := range s.records[name] {
			if rr.Header().Rrtype == qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			} else if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if len(m.Answer) > 0 && m.Answer[len(m.Answer)-1].Header().Rrtype == qtype || cname == nil || qtype == dns.TypeCNAME {
			return
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = strings.ToLower(cname.Target)
	}
}

// TLSA publishes, for host's port, a TLSA record of the given usage (3,
// DANE-EE, or 2, DANE-TA) with selector 1 and matching type 1: the
// SHA-256 of the public key of cert's first certificate. It panics when
// that certificate cannot be parsed, as Add does on a malformed record.
func (s *Server) TLSA(host string, port, usage int, cert tls.Certificate) *Server {
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		panic(fmt.Sprintf("dnstest: TLSA for %s: %v", host, err))
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return s.Add(fmt.Sprintf("_%d._tcp.%s. TLSA %d 1 1 %s", port, strings.TrimSuffix(host, "."), usage, hex.EncodeToString(sum[:])))
}
