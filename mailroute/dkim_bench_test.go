package mailroute

import (
	"crypto"
	"strings"
	"testing"

	"github.com/mailroute/go-mailroute/internal/message"
)

// BenchmarkDKIMSign measures prepareBody: the header scan, a Date and a
// Message-ID, one signature, and the signed copy of the message.
func BenchmarkDKIMSign(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"2KiB", 2 << 10}, {"100KiB", 100 << 10}} {
		line := "The quick brown fox jumps over the lazy dog, again and again.\r\n"
		text := testBody + strings.Repeat(line, size.n/len(line))
		body, err := message.NewBody(strings.NewReader(text), message.BodyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for _, key := range []struct {
			name   string
			signer crypto.Signer
		}{{"rsa2048", testRSA2048()}, {"ed25519", testEd25519(b)}} {
			m := &Mailer{cfg: Config{DKIM: []DKIMSignature{{Domain: "sender.test", Selector: "s", Signer: key.signer}}}, hostname: "mail.sender.test"}
			b.Run(size.name+"/"+key.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(body.Size())
				for b.Loop() {
					signed, err := m.prepareBody(body)
					if err != nil {
						b.Fatal(err)
					}
					signed.Close()
				}
			})
		}
		body.Close()
	}
}
