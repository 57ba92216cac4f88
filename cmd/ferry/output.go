package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// printer writes data as a table (for people) or JSON/YAML (for scripts).
type printer struct {
	format string
}

func (p printer) validate() error {
	switch p.format {
	case "table", "json", "yaml":
		return nil
	}
	return badInput(fmt.Errorf("--output %q: must be table, json or yaml", p.format))
}

// print writes v as JSON or YAML, or calls table with a tabwriter.
func (p printer) print(w io.Writer, v any, table func(*tabwriter.Writer)) error {
	switch p.format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	default:
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}
}
