package doctor

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"unicode/utf8"
)

// String formats the report as a table: one row per finding, its text
// wrapped to fit a terminal, and the fix, when there is one, below it.
func (r *Report) String() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "STATUS\tCHECK\tPATH\tLOOKED UP\tFOUND")
	for _, f := range r.Findings {
		path := "both"
		if f.Path != 0 {
			path = f.Path.String()
		}
		lines := wrap(f.Found, reportWidth)
		if f.Fix != "" {
			for i, l := range wrap(f.Fix, reportWidth-2) {
				if i == 0 {
					lines = append(lines, "→ "+l)
				} else {
					lines = append(lines, "  "+l)
				}
			}
		}
		for i, l := range lines {
			if i == 0 {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", f.Status, f.Check, path, f.Query, l)
			} else {
				fmt.Fprintf(w, "\t\t\t\t%s\n", l)
			}
		}
	}
	w.Flush()
	return b.String()
}

// reportWidth is the width of the FOUND column of Report.String.
const reportWidth = 72

// wrap breaks s at spaces into lines of at most width runes; a longer word
// (a key in a TXT record) gets a line of its own.
func wrap(s string, width int) []string {
	var lines []string
	var line strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		wl := utf8.RuneCountInString(word)
		if n > 0 && n+1+wl > width {
			lines = append(lines, line.String())
			line.Reset()
			n = 0
		}
		if n > 0 {
			line.WriteByte(' ')
			n++
		}
		line.WriteString(word)
		n += wl
	}
	if n > 0 || len(lines) == 0 {
		lines = append(lines, line.String())
	}
	return lines
}
