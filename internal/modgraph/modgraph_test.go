// Package modgraph holds no code: its tests check the module as a user
// meets it — what the core brings into the module graph of a program that
// uses it (go mod tidy, go list -m all), and examples that can be copied.
package modgraph

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestCoreUserModuleGraph makes a module that imports only the core
// package, tidies it offline against this checkout and the module cache,
// and checks that tidy kept the user's go line and that no queue store's
// dependency (River, pgx and what they pull in) is in its graph: those
// belong to mailroute/riverqueue, a module of its own.
func TestCoreUserModuleGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		t.Skipf("no go command beside the toolchain: %v", err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	goLine := goLineOf(t, filepath.Join(root, "go.mod"))

	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The user declares the core module's own go line: tidy must not raise it.
	write("go.mod", "module example.com/user\n\ngo "+goLine+"\n\n"+
		"require github.com/mailroute/go-mailroute v0.0.0-00010101000000-000000000000\n\n"+
		"replace github.com/mailroute/go-mailroute => "+root+"\n")
	write("main.go", "package main\n\nimport _ \"github.com/mailroute/go-mailroute/mailroute\"\n\nfunc main() {}\n")
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	write("go.sum", string(sum)) // the user's requirements are a subset of the core's

	run := func(args ...string) string {
		cmd := exec.Command(goBin, args...)
		cmd.Dir = dir
		// Offline: everything must come from the module cache the core's
		// own build filled. GOTOOLCHAIN=local: the test checks the go
		// line, it must not switch toolchains to satisfy it.
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=mod", "GOWORK=off",
			"GOTOOLCHAIN=local", "GOSUMDB=off")
		out, err := cmd.CombinedOutput()
		if err != nil && strings.Contains(string(out), "disabled by GOPROXY=off") {
			// The test stays offline; CI runs go list -m all first.
			t.Skipf("the module cache lacks a module of the graph (run go list -m all in the core module): go %s: %s", strings.Join(args, " "), out)
		}
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("mod", "tidy")
	if got := goLineOf(t, filepath.Join(dir, "go.mod")); got != goLine {
		t.Errorf("go mod tidy changed the user's go line from %s to %s", goLine, got)
	}
	all := run("list", "-m", "all")
	for _, banned := range []string{"github.com/riverqueue/", "github.com/jackc/", "github.com/tidwall/", "github.com/robfig/"} {
		for _, line := range strings.Split(all, "\n") {
			if strings.HasPrefix(line, banned) {
				t.Errorf("a core-only user's module graph holds %s", line)
			}
		}
	}
	if !strings.Contains(all, "github.com/emersion/go-smtp ") {
		t.Errorf("go list -m all lacks the core's own dependency go-smtp; the check saw nothing:\n%s", all)
	}
}

// goLineOf returns the version on a go.mod's go line.
func goLineOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s has no go line", path)
	return ""
}
