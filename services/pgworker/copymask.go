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
// until the rest arrives (in CSV, a quoted field may span lines). Rows and
// fields are read with the statement's own grammar (its delimiter, CSV
// quote and escape, text format's backslash escapes), the way PostgreSQL
// wrote them; a row that does not split into the statement's columns is
// masked whole.
type copyMask struct {
	plan          *pgmask.Plan
	csv           bool
	delim         byte
	quote, escape byte
	null          string
	whole         map[int]string // field index -> masked column label
	all           bool           // every field is masked whole (derived data)
	header        bool           // the first line is the column names: not data
	fields        int            // the columns each row holds; 0 = unknown
	pending       []byte
	out           []byte
	bounds        []int // maskRow's field boundaries, reused
}

// newCopyMask plans masking for a COPY statement: per field where the
// lineage lines up, every field only where it does not.
func newCopyMask(plan *pgmask.Plan, text string, lin pgmask.Lineage) (*copyMask, error) {
	c, err := sqlclass.ParseCopy(text)
	if err != nil {
		return nil, pgmask.ErrUndecodable
	}
	if c.Format == "binary" || len(c.Other) > 0 || c.Delimiter == '\\' || c.Delimiter == '\n' || c.Delimiter == '\r' {
		return nil, pgmask.ErrUndecodable
	}
	cm := &copyMask{plan: plan, csv: c.Format == "csv", delim: c.Delimiter, quote: c.Quote, escape: c.Escape, null: c.Null,
		whole: map[int]string{}, header: c.Header}
	if !cm.csv && c.Null != `\N` {
		// Text format writes a value equal to a NULL string of the
		// statement's own as it is (CSV quotes it; \N cannot occur): a
		// field that reads as NULL may be a value, and is masked too.
		cm.null = "\x00"
	}
	if c.Query {
		if lin.Targets == nil {
			cm.all = plan.Derives(lin.Refs)
			return cm, nil
		}
		cm.fields = len(lin.Targets)
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
	cm.fields = len(cols)
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
	for {
		end, ok := c.rowEnd(c.pending[start:])
		if !ok {
			break
		}
		c.out = c.maskRow(c.out, c.pending[start:start+end], st)
		start += end
	}
	c.pending = append(c.pending[:0], c.pending[start:]...)
	return c.out
}

// rowEnd is the length of the first complete row of b (its newline
// included), read with the statement's grammar.
func (c *copyMask) rowEnd(b []byte) (int, bool) {
	quoted := false
	for i := 0; i < len(b); i++ {
		ch := b[i]
		switch {
		case c.csv && quoted:
			i += c.inQuotes(b, i, &quoted)
		case c.csv && ch == c.quote:
			quoted = true
		case !c.csv && ch == '\\':
			i++ // text format: the next byte is escaped
		case ch == '\n':
			return i + 1, true
		}
	}
	return 0, false
}

// inQuotes reads b[i] inside a quoted CSV field, as PostgreSQL writes one:
// an escape other than the quote precedes every quote and escape in the
// value; with the escape the quote, a quote is doubled. It returns the
// bytes it took beyond b[i] and clears *quoted at the closing quote.
func (c *copyMask) inQuotes(b []byte, i int, quoted *bool) int {
	switch ch := b[i]; {
	case ch == c.escape && c.escape != c.quote:
		return 1
	case ch == c.quote && c.escape == c.quote && i+1 < len(b) && b[i+1] == c.quote:
		return 1
	case ch == c.quote:
		*quoted = false
	}
	return 0
}

// split puts the end of each field of row (without its newline) into
// c.bounds, read with the statement's grammar; ok is false when the row is
// not one PostgreSQL writes (a quote inside an unquoted field, text after a
// closing quote, a quote left open).
func (c *copyMask) split(row []byte) (ends []int, ok bool) {
	b := c.bounds[:0]
	quoted, ok, start := false, true, 0
	for i := 0; i < len(row); i++ {
		ch := row[i]
		switch {
		case c.csv && quoted:
			i += c.inQuotes(row, i, &quoted)
			if !quoted && i+1 < len(row) && row[i+1] != c.delim {
				ok = false
			}
		case c.csv && ch == c.quote:
			ok = ok && i == start
			quoted = true
		case !c.csv && ch == '\\':
			i++
		case ch == c.delim:
			b = append(b, i)
			start = i + 1
		}
	}
	c.bounds = append(b, len(row))
	return c.bounds, ok && !quoted
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
	nl := bytes.HasSuffix(row, []byte{'\n'})
	if nl {
		row = row[:len(row)-1]
	}
	ends, ok := c.split(row)
	header := c.header
	c.header = false
	switch {
	case !ok || (c.fields > 0 && len(ends) != c.fields):
		// Not the statement's columns: read differently from how it was
		// written, it is masked whole rather than trusted.
		dst = c.plan.MaskWholeText(dst, row)
		st.Column("copy:row")
	case header:
		dst = append(dst, row...) // the column names
	case len(c.whole) == 0 && !c.all:
		dst = c.plan.MaskText(dst, row, st)
	default:
		start := 0
		for field, end := range ends {
			f := row[start:end]
			label, whole := c.whole[field]
			switch {
			case (whole || c.all) && string(f) != c.null:
				dst = c.plan.MaskWholeText(dst, f)
				if label == "" {
					label = "copy:all"
				}
				st.Column(label)
			default:
				dst = c.plan.MaskText(dst, f, st)
			}
			if end < len(row) {
				dst = append(dst, c.delim)
			}
			start = end + 1
		}
	}
	if nl {
		dst = append(dst, '\n')
	}
	return dst
}
