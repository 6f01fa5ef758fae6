package sqlclass

import (
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Copy describes a COPY ... TO STDOUT well enough to mask its output.
type Copy struct {
	// Table is the relation copied ("schema.table" when qualified); empty
	// for COPY (query).
	Table string
	// Columns is the column list, if one was given.
	Columns []string
	// Query is true for COPY (query) TO STDOUT.
	Query bool
	// Format is text, csv or binary; Delimiter the field separator.
	Format    string
	Delimiter byte
	// Header says the first line holds the column names.
	Header bool
	// Quote and Escape are CSV's quoting characters (both '"' unless set).
	Quote, Escape byte
	// Null is how a NULL is written (\N in text, nothing in CSV, unless set).
	Null string
	// Other names the options given that change the output in ways not
	// described here (ENCODING, say): a reader that must understand every
	// byte refuses them.
	Other []string
}

// ParseCopy reads a single COPY ... TO STDOUT statement.
func ParseCopy(sql string) (*Copy, error) {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrParse, err)
	}
	if len(tree.GetStmts()) != 1 {
		return nil, fmt.Errorf("sqlclass: want one COPY statement")
	}
	cs := tree.GetStmts()[0].GetStmt().GetCopyStmt()
	if cs == nil || cs.GetIsFrom() {
		return nil, fmt.Errorf("sqlclass: not a COPY ... TO statement")
	}
	c := &Copy{Format: "text", Delimiter: '\t', Query: cs.GetQuery() != nil, Quote: '"'}
	escapeSet, nullSet := false, false
	if rv := cs.GetRelation(); rv != nil {
		c.Table = relName(rv)
	}
	for _, a := range cs.GetAttlist() {
		c.Columns = append(c.Columns, a.GetString_().GetSval())
	}
	delimiterSet := false
	for _, o := range cs.GetOptions() {
		de := o.GetDefElem()
		if de == nil {
			continue
		}
		val := ""
		if s := de.GetArg().GetString_(); s != nil {
			val = s.GetSval()
		}
		switch strings.ToLower(de.GetDefname()) {
		case "format":
			c.Format = strings.ToLower(val)
		case "delimiter":
			if len(val) != 1 {
				return nil, fmt.Errorf("sqlclass: unsupported COPY delimiter %q", val)
			}
			c.Delimiter, delimiterSet = val[0], true
		case "quote", "escape":
			if len(val) != 1 {
				return nil, fmt.Errorf("sqlclass: unsupported COPY %s %q", de.GetDefname(), val)
			}
			if strings.EqualFold(de.GetDefname(), "quote") {
				c.Quote = val[0]
			} else {
				c.Escape, escapeSet = val[0], true
			}
		case "null":
			c.Null, nullSet = val, true
		case "force_quote":
			// Quotes more fields; the CSV grammar reads them alike.
		case "binary":
			c.Format = "binary"
		case "csv":
			c.Format = "csv"
		case "header":
			c.Header = true
			switch {
			case de.GetArg() == nil:
			case de.GetArg().GetBoolean() != nil:
				c.Header = de.GetArg().GetBoolean().GetBoolval()
			case de.GetArg().GetInteger() != nil:
				c.Header = de.GetArg().GetInteger().GetIval() != 0
			default:
				v := strings.ToLower(val)
				c.Header = v != "false" && v != "off" && v != "0"
			}
		default:
			c.Other = append(c.Other, strings.ToLower(de.GetDefname()))
		}
	}
	if !escapeSet {
		c.Escape = c.Quote
	}
	if !nullSet && c.Format == "text" {
		c.Null = `\N`
	}
	if c.Format == "csv" && !delimiterSet {
		c.Delimiter = ','
	}
	return c, nil
}
