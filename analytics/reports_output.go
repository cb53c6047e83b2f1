package analytics

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Cell is the value in row i, column j as text: times in RFC 3339 UTC,
// dates as YYYY-MM-DD, floats in their shortest exact form ("NaN" for the
// quantile of nothing).
func (r *Result) Cell(i, j int) string {
	switch v := r.Rows[i][j].(type) {
	case string:
		return v
	case time.Time:
		if strings.HasPrefix(r.Types[j], "Date") && !strings.HasPrefix(r.Types[j], "DateTime") {
			return v.UTC().Format(time.DateOnly)
		}
		return v.UTC().Format(time.RFC3339)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(v), 'f', -1, 32)
	default:
		return fmt.Sprint(v)
	}
}

// WriteTable writes the result as aligned columns with a header line.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(r.Columns, "\t")))
	for i := range r.Rows {
		cells := make([]string, len(r.Columns))
		for j := range cells {
			cells[j] = r.Cell(i, j)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// WriteCSV writes the result as RFC 4180 CSV with a header line.
func (r *Result) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(r.Columns); err != nil {
		return err
	}
	for i := range r.Rows {
		cells := make([]string, len(r.Columns))
		for j := range cells {
			cells[j] = r.Cell(i, j)
		}
		if err := cw.Write(cells); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteJSON writes the result as a JSON array of objects, one per row,
// keys in column order: numbers as numbers (NaN as null), times and
// dates as the strings Cell gives.
func (r *Result) WriteJSON(w io.Writer) error {
	var b strings.Builder
	b.WriteString("[")
	for i, row := range r.Rows {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n  {")
		for j, v := range row {
			if j > 0 {
				b.WriteString(", ")
			}
			k, _ := json.Marshal(r.Columns[j])
			b.Write(k)
			b.WriteString(": ")
			switch x := v.(type) {
			case time.Time:
				v = r.Cell(i, j)
			case float64:
				if math.IsNaN(x) || math.IsInf(x, 0) {
					v = nil
				}
			}
			val, err := json.Marshal(v)
			if err != nil {
				return fmt.Errorf("analytics: column %s: %w", r.Columns[j], err)
			}
			b.Write(val)
		}
		b.WriteString("}")
	}
	if len(r.Rows) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("]\n")
	_, err := io.WriteString(w, b.String())
	return err
}
