package pgworker

import (
	"bytes"
	"strconv"
	"strings"

	"sluice.dev/sluice/libs/pgmask"
	"sluice.dev/sluice/libs/sqlclass"
)

// copyMask masks the rows of a COPY ... TO STDOUT in text or CSV format.
// Rows may be split across CopyData messages; an incomplete row is kept
// until the rest arrives (in CSV, a quoted field may span lines).
type copyMask struct {
	plan    *pgmask.Plan
	csv     bool
	delim   byte
	whole   map[int]string // field index -> masked column label
	all     bool           // every field is masked whole (derived data)
	header  bool           // the first line is the column names: not data
	pending []byte
	out     []byte
}

// newCopyMask plans masking for a COPY statement: per field where the
// lineage lines up, every field only where it does not.
func newCopyMask(plan *pgmask.Plan, text string, lin pgmask.Lineage) (*copyMask, error) {
	c, err := sqlclass.ParseCopy(text)
	if err != nil {
		return nil, pgmask.ErrUndecodable
	}
	if c.Format == "binary" {
		return nil, pgmask.ErrUndecodable
	}
	cm := &copyMask{plan: plan, csv: c.Format == "csv", delim: c.Delimiter, whole: map[int]string{}, header: c.Header}
	if c.Query {
		if lin.Targets == nil {
			cm.all = plan.Derives(lin.Refs)
			return cm, nil
		}
		for i, t := range lin.Targets {
			if plan.Derives(t) {
				cm.whole[i] = "field:" + strconv.Itoa(i+1)
			}
		}
		return cm, nil
	}
	cols := c.Columns
	if len(cols) == 0 {
		cols = plan.Catalog().Table(c.Table)
	}
	table := strings.ToLower(c.Table)
	plain := table
	if i := strings.LastIndexByte(table, '.'); i >= 0 {
		plain = table[i+1:]
	}
	for i, col := range cols {
		col = strings.ToLower(col)
		for _, name := range []string{plain + "." + col, table + "." + col} {
			if plan.MasksColumn(name) {
				cm.whole[i] = name
			}
		}
	}
	if len(cols) == 0 && (plan.MasksRelation(table) || plan.MasksRelation(plain)) {
		cm.all = true // the table's layout is unknown: mask every field
	}
	return cm, nil
}

// feed takes one CopyData payload and returns the masked rows complete so
// far (possibly none).
func (c *copyMask) feed(data []byte, st *pgmask.Stats) []byte {
	c.pending = append(c.pending, data...)
	c.out = c.out[:0]
	start := 0
	quoted := false
	for i := 0; i < len(c.pending); i++ {
		b := c.pending[i]
		if c.csv && b == '"' {
			quoted = !quoted
			continue
		}
		if b == '\n' && !quoted {
			c.out = c.maskRow(c.out, c.pending[start:i+1], st)
			start = i + 1
		}
	}
	c.pending = append(c.pending[:0], c.pending[start:]...)
	return c.out
}

// flush returns what remains at the end of the copy.
func (c *copyMask) flush(st *pgmask.Stats) []byte {
	c.out = c.maskRow(c.out[:0], c.pending, st)
	c.pending = c.pending[:0]
	return c.out
}

// maskRow masks one row (with its newline, if any).
func (c *copyMask) maskRow(dst, row []byte, st *pgmask.Stats) []byte {
	if len(row) == 0 {
		return dst
	}
	if c.header {
		c.header = false
		return append(dst, row...)
	}
	if len(c.whole) == 0 && !c.all {
		return c.plan.MaskText(dst, row, st)
	}
	nl := bytes.HasSuffix(row, []byte{'\n'})
	if nl {
		row = row[:len(row)-1]
	}
	field, start := 0, 0
	quoted := false
	emit := func(f []byte) {
		label, whole := c.whole[field]
		switch {
		case (whole || c.all) && !isNullField(f, c.csv):
			dst = c.plan.MaskWholeText(dst, f)
			if label == "" {
				label = "copy:all"
			}
			st.Column(label)
		default:
			dst = c.plan.MaskText(dst, f, st)
		}
	}
	for i := 0; i < len(row); i++ {
		b := row[i]
		if c.csv && b == '"' {
			quoted = !quoted
			continue
		}
		if b == c.delim && !quoted {
			emit(row[start:i])
			dst = append(dst, c.delim)
			field++
			start = i + 1
		}
	}
	emit(row[start:])
	if nl {
		dst = append(dst, '\n')
	}
	return dst
}

func isNullField(f []byte, csv bool) bool {
	if csv {
		return len(f) == 0
	}
	return string(f) == `\N`
}
