package mailroute

// Provider is a mailbox provider or mail gateway, recognised either by its
// own mailbox domains (no DNS needed) or by its MX hosts, so that a company
// domain hosted on it (Google Workspace, Microsoft 365…) is recognised too.
type Provider struct {
	Name string
	// Domains are the provider's own mailbox domains, as routing patterns:
	// "gmail.com" exactly, ".example.com" for it and its subdomains.
	Domains []string
	// MXSuffixes are host name suffixes of the provider's MX hosts, matched
	// by whole labels: "google.com" matches "aspmx.l.google.com" and
	// "google.com" but never "notgoogle.com". A leading dot is optional.
	MXSuffixes []string
}

// The catalogue. Mailbox domains are only a fast path that saves a DNS
// lookup; any other domain whose MX hosts all carry a provider's suffixes
// belongs to it as well. Sources are named per entry; the MX suffixes are
// what each provider documents for its hosted-domain customers and what its
// own domains publish.
var (
	// Google: Gmail and Google Workspace. MX: gmail.com publishes
	// gmail-smtp-in.l.google.com; Workspace documents aspmx.l.google.com
	// and alt1–4.aspmx.l.google.com (older setups) and smtp.google.com (since
	// 2023); googlemail.com hosts are Google's legacy names.
	Google = Provider{
		Name:       "Google",
		Domains:    []string{"gmail.com", "googlemail.com"},
		MXSuffixes: []string{".google.com", ".googlemail.com"},
	}

	// Microsoft: Outlook.com consumer mail and Microsoft 365 (Exchange
	// Online). MX: Microsoft 365 documents <tenant>.mail.protection.outlook.com
	// and, since 2024, <tenant>.<region>.mx.microsoft (DNSSEC-signed MX);
	// the consumer domains publish *.olc.protection.outlook.com, and
	// mx*.hotmail.com on older records. The domain list holds the consumer
	// domains in wide use: outlook.com and its country variants, hotmail and
	// live in the countries where they were sold, msn.com, passport.com.
	Microsoft = Provider{
		Name: "Microsoft",
		Domains: []string{
			"outlook.com", "outlook.fr", "outlook.de", "outlook.es", "outlook.it",
			"outlook.jp", "outlook.com.br", "outlook.com.au", "outlook.co.uk",
			"hotmail.com", "hotmail.co.uk", "hotmail.fr", "hotmail.de", "hotmail.it",
			"hotmail.es", "hotmail.be", "hotmail.nl", "hotmail.ca", "hotmail.com.au",
			"hotmail.co.jp", "hotmail.com.br", "hotmail.com.ar", "hotmail.se",
			"hotmail.dk", "hotmail.no", "hotmail.fi", "hotmail.gr",
			"live.com", "live.co.uk", "live.fr", "live.de", "live.it", "live.nl",
			"live.be", "live.ca", "live.com.au", "live.com.mx", "live.se", "live.dk",
			"live.no", "live.jp", "msn.com", "passport.com", "windowslive.com",
		},
		MXSuffixes: []string{".protection.outlook.com", ".mx.microsoft", ".hotmail.com"},
	}

	// Yahoo: Yahoo Mail and AOL (one company since 2017; AOL's MX moved to
	// Yahoo's mx-aol.mail.gm0.yahoodns.net). MX: yahoo.com publishes
	// mta*.am0.yahoodns.net; .mx.aol.com is AOL's older MX. Yahoo! Japan
	// (yahoo.co.jp) is a different company with its own MX and is not here.
	Yahoo = Provider{
		Name: "Yahoo",
		Domains: []string{
			"yahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de", "yahoo.it", "yahoo.es",
			"yahoo.ca", "yahoo.com.au", "yahoo.co.in", "yahoo.in", "yahoo.com.br",
			"yahoo.com.mx", "yahoo.com.ar", "yahoo.ie", "yahoo.gr", "yahoo.se",
			"yahoo.dk", "yahoo.no", "yahoo.fi", "yahoo.com.sg", "yahoo.com.ph",
			"yahoo.co.id", "yahoo.com.tw", "yahoo.com.hk", "yahoo.co.nz",
			"ymail.com", "rocketmail.com", "aol.com", "aim.com",
		},
		MXSuffixes: []string{".yahoodns.net", ".mx.aol.com"},
	}

	// Apple: iCloud Mail. MX: icloud.com, me.com and mac.com publish
	// mx01/mx02.mail.icloud.com, as do custom domains on iCloud+.
	Apple = Provider{
		Name:       "Apple",
		Domains:    []string{"icloud.com", "me.com", "mac.com"},
		MXSuffixes: []string{".mail.icloud.com"},
	}

	// GMX and WEB.DE (United Internet), large in German-speaking countries.
	// MX: gmx.net publishes mx00/mx01.emig.gmx.net, gmx.com mx00.gmx.com,
	// web.de mx-ha03.web.de / mx-ha02.web.de. Opt-in: not in BigProviders.
	GMX = Provider{
		Name: "GMX/WEB.DE",
		Domains: []string{
			"gmx.de", "gmx.net", "gmx.at", "gmx.ch", "gmx.com", "gmx.us", "gmx.co.uk",
			"gmx.fr", "gmx.es", "gmx.it", "web.de",
		},
		MXSuffixes: []string{".gmx.net", ".gmx.com", ".web.de"},
	}

	// Yandex: Yandex Mail and Yandex 360 for business, whose documented MX
	// is mx.yandex.net; yandex.ru publishes mx.yandex.ru. Opt-in.
	Yandex = Provider{
		Name:       "Yandex",
		Domains:    []string{"yandex.ru", "yandex.com", "yandex.by", "yandex.kz", "yandex.ua", "ya.ru"},
		MXSuffixes: []string{".yandex.ru", ".yandex.net", ".yandex.com"},
	}

	// Zoho Mail: its documented MX for hosted domains are mx.zoho.<region>
	// (com, eu, in, com.au, jp) and mx.zohomail.com. Opt-in.
	Zoho = Provider{
		Name:       "Zoho",
		Domains:    []string{"zoho.com", "zohomail.com", "zoho.eu", "zohomail.eu", "zoho.in", "zohomail.in"},
		MXSuffixes: []string{".zoho.com", ".zoho.eu", ".zoho.in", ".zoho.com.au", ".zoho.jp", ".zohomail.com"},
	}

	// Mimecast: a filtering gateway in front of company mail, with
	// reputation checks as strict as the big providers'. Its documented MX
	// are <region>-smtp-inbound-N.mimecast.com (and mimecast.co.za for
	// South Africa). No mailbox domains. Opt-in.
	Mimecast = Provider{
		Name:       "Mimecast",
		MXSuffixes: []string{".mimecast.com", ".mimecast.co.za"},
	}

	// Proofpoint: a filtering gateway; Proofpoint on Demand customers publish
	// mx*-<id>.pphosted.com, Essentials customers *.ppe-hosted.com. Opt-in.
	Proofpoint = Provider{
		Name:       "Proofpoint",
		MXSuffixes: []string{".pphosted.com", ".ppe-hosted.com"},
	}
)

// BigProviders are the mailbox providers that distrust small senders the
// most: Google, Microsoft, Yahoo (with AOL) and Apple. DefaultRouter sends
// them through the relay.
var BigProviders = []Provider{Google, Microsoft, Yahoo, Apple}

// DefaultRouter routes BigProviders (recognised by domain or by MX) through
// the relay and everything else direct.
var DefaultRouter Router = mustCompile(Rules{
	{Providers: BigProviders, Via: Relayed},
	{Domains: []string{"*"}, Via: Direct},
})
