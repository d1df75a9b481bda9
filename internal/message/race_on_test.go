//go:build race

package message

// raceEnabled: the race detector is on. Its sync.Pool drops a quarter of
// what is put back, on purpose, so allocation counts are not exact.
const raceEnabled = true
