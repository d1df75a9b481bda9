package modgraph

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestExamplesImportOnlyPublicPackages keeps every example copyable into
// a user's module: the programs under examples/ and the Example functions
// of the public packages import nothing under internal/, which a user's
// module cannot import.
func TestExamplesImportOnlyPublicPackages(t *testing.T) {
	var files []string
	filepath.WalkDir("../../examples", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") {
			files = append(files, path)
		}
		return nil
	})
	filepath.WalkDir("../../mailroute", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "example") && strings.HasSuffix(path, "_test.go") {
			files = append(files, path)
		}
		return nil
	})
	if len(files) < 10 {
		t.Fatalf("found only %d example files: %v", len(files), files)
	}
	fset := token.NewFileSet()
	for _, path := range files {
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.Contains(p, "/internal/") || strings.HasSuffix(p, "/internal") {
				t.Errorf("%s imports %s: a user who copies it cannot build it", path, p)
			}
		}
	}
}
