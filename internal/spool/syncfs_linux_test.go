package spool

import "testing"

// TestKernelAtLeast: syncfs is used only where it reports write-back
// errors (Linux 5.8), so the release parser must never say yes wrongly.
func TestKernelAtLeast(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    bool
	}{
		{"5.8.0", true},
		{"5.8", true},
		{"5.7.19", false},
		{"5.10.0-28-amd64", true},
		{"6.1.0-18-amd64", true},
		{"6.18.44-fc-v1045", true},
		{"4.19.0", false},
		{"5.8-rc1", true},
		{"5.7-rc1", false},
		{"10.0", true},
		{"", false},
		{"5", false},
		{"x.y.z", false},
		{"5.x", false},
	} {
		if got := kernelAtLeast(tc.release, 5, 8); got != tc.want {
			t.Errorf("kernelAtLeast(%q, 5, 8) = %v, want %v", tc.release, got, tc.want)
		}
	}
}

// TestSyncFSInUse: on this kernel the default store shares syncfs calls,
// and NoGroupCommit or NoSync turn it off.
func TestSyncFSInUse(t *testing.T) {
	f := openSyncFS(t.TempDir())
	if f == nil {
		t.Skip("kernel older than 5.8: the store fsyncs file by file")
	}
	f.Close()
	for _, tc := range []struct {
		opts Options
		want bool
	}{{Options{}, true}, {Options{NoGroupCommit: true}, false}, {Options{NoSync: true}, false}} {
		s := openT(t, t.TempDir(), tc.opts)
		if got := s.fs.whole != nil; got != tc.want {
			t.Errorf("%+v: syncfs in use = %v, want %v", tc.opts, got, tc.want)
		}
		s.Close()
	}
}
