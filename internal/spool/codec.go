package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"time"
)

// formatVersion is the state file format. A file with another version is
// quarantined rather than guessed at. Version 2 is version 1 with
// "require_tls": true, and only a message with that mark is written in it:
// every other state stays readable by the versions of this package that
// know only version 1, and those quarantine a marked message rather than
// ignore a field they do not know and send it without the protection it
// asked for.
const (
	formatVersion           = 1
	formatVersionRequireTLS = 2
)

// castagnoli is CRC-32C, hardware-accelerated on amd64 and arm64: cheap
// enough to check every state and every body sent.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// A state file is
//
//	{"version":1,"crc32c":"1a2b3c4d","payload":{...}}
//
// written in exactly that shape, so that the payload's bytes in the file are
// the bytes the checksum covers (json.RawMessage keeps them verbatim when
// reading). The version and checksum come first so a human reading the file
// sees them; the checksum catches truncation and bit flips alike.
type stateFile struct {
	Version int             `json:"version"`
	CRC32C  string          `json:"crc32c"`
	Payload json.RawMessage `json:"payload"`
}

// state is the payload: the Message plus what the store needs to check the
// body. Field names are spelled out so that the format does not change when
// the Go types are renamed.
type state struct {
	ID         string            `json:"id"`
	From       string            `json:"from"`
	Created    time.Time         `json:"created"`
	Recipients []stateRecipient  `json:"recipients"`
	Meta       map[string]string `json:"meta,omitempty"`
	RequireTLS bool              `json:"require_tls,omitempty"`
	BodySize   int64             `json:"body_size"`
	BodyCRC32C uint32            `json:"body_crc32c"`
}

type stateRecipient struct {
	Rcpt           string    `json:"rcpt"`
	Attempts       int       `json:"attempts"`
	DirectAttempts int       `json:"direct_attempts"`
	NextAttempt    time.Time `json:"next_attempt"`
	LastError      string    `json:"last_error,omitempty"`
	Queued         time.Time `json:"queued"`
}

// bodyInfo is what the state records about a body.
type bodyInfo struct {
	size int64
	crc  uint32
}

// encodeState returns the state file's bytes for m and its body.
func encodeState(m *Message, b bodyInfo) ([]byte, error) {
	s := state{ID: m.ID, From: m.From, Created: m.Created, Meta: m.Meta, RequireTLS: m.RequireTLS, BodySize: b.size, BodyCRC32C: b.crc}
	s.Recipients = make([]stateRecipient, len(m.Recipients))
	for i, r := range m.Recipients {
		s.Recipients[i] = stateRecipient(r)
	}
	payload, err := json.Marshal(&s)
	if err != nil {
		return nil, fmt.Errorf("spool: encoding state of %s: %w", m.ID, err)
	}
	var buf bytes.Buffer
	buf.Grow(len(payload) + 64)
	version := formatVersion
	if m.RequireTLS {
		version = formatVersionRequireTLS
	}
	fmt.Fprintf(&buf, `{"version":%d,"crc32c":"%08x","payload":`, version, crc32.Checksum(payload, castagnoli))
	buf.Write(payload)
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}

// errBadState wraps every reason a state file is rejected.
var errBadState = errors.New("bad state file")

// decodeState parses and checks a state file. Any error wraps errBadState
// and says what is wrong, for the quarantine log line.
func decodeState(data []byte) (*Message, bodyInfo, error) {
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, bodyInfo{}, fmt.Errorf("%w: %v", errBadState, err)
	}
	if f.Version != formatVersion && f.Version != formatVersionRequireTLS {
		return nil, bodyInfo{}, fmt.Errorf("%w: format version %d, want %d or %d", errBadState, f.Version, formatVersion, formatVersionRequireTLS)
	}
	want, err := strconv.ParseUint(f.CRC32C, 16, 32)
	if err != nil || len(f.CRC32C) != 8 {
		return nil, bodyInfo{}, fmt.Errorf("%w: checksum %q is not 8 hex digits", errBadState, f.CRC32C)
	}
	if got := crc32.Checksum(f.Payload, castagnoli); got != uint32(want) {
		return nil, bodyInfo{}, fmt.Errorf("%w: checksum %08x, file says %08x", errBadState, got, want)
	}
	var s state
	if err := json.Unmarshal(f.Payload, &s); err != nil {
		return nil, bodyInfo{}, fmt.Errorf("%w: payload: %v", errBadState, err)
	}
	// The version and the mark go together (see formatVersion): a state
	// where they disagree was not written by this package, and neither
	// reading of it can be trusted.
	if s.RequireTLS != (f.Version == formatVersionRequireTLS) {
		return nil, bodyInfo{}, fmt.Errorf("%w: format version %d with require_tls %v", errBadState, f.Version, s.RequireTLS)
	}
	m := &Message{ID: s.ID, From: s.From, Created: s.Created, Meta: s.Meta, RequireTLS: s.RequireTLS}
	m.Recipients = make([]Recipient, len(s.Recipients))
	for i, r := range s.Recipients {
		m.Recipients[i] = Recipient(r)
	}
	if err := checkMessage(m); err != nil {
		return nil, bodyInfo{}, fmt.Errorf("%w: %v", errBadState, err)
	}
	if len(m.Recipients) == 0 {
		// Update deletes a message when its last recipient goes, so a state
		// without recipients was never written by this package.
		return nil, bodyInfo{}, fmt.Errorf("%w: no recipients", errBadState)
	}
	if s.BodySize < 0 {
		return nil, bodyInfo{}, fmt.Errorf("%w: body size %d", errBadState, s.BodySize)
	}
	return clone(m), bodyInfo{size: s.BodySize, crc: s.BodyCRC32C}, nil
}
