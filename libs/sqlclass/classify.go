package sqlclass

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// Parts are what a classification computes besides each statement's class.
type Parts uint8

const (
	// Lineage is each statement's Targets, Sources, Copies and Inputs.
	Lineage Parts = 1 << iota
	// Fingerprints are Result.Fingerprint and Result.QueryFingerprint,
	// which cost a parse of their own. The first digests the lineage, so
	// they bring the Lineage with them.
	Fingerprints
	// All is what Classify computes.
	All = Lineage | Fingerprints
)

// Classify parses sql with the PostgreSQL 17 grammar and classifies each of
// its statements. It fails closed: anything the parser rejects is ErrParse.
func Classify(sql string) (*Result, error) {
	return ClassifyParts(sql, All)
}

// ClassifyParts classifies as Classify does, computing only the parts
// asked for: the classes of the statements are the same, and what is left
// out is empty.
func ClassifyParts(sql string, parts Parts) (*Result, error) {
	tree, err := parse(sql)
	if err != nil {
		return nil, err
	}
	return classifyParts(sql, tree, parts)
}

// classifyParts classifies the parse tree of sql.
func classifyParts(sql string, tree *pg_query.ParseResult, parts Parts) (*Result, error) {
	res := classifyTree(sql, tree, parts&(Lineage|Fingerprints) != 0)
	if parts&Fingerprints == 0 {
		return res, nil
	}
	fp, err := pg_query.Fingerprint(sql)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrParse, err.Error())
	}
	res.QueryFingerprint = fp
	res.Fingerprint = cacheKey(fp, res.Statements)
	return res, nil
}

// parse parses sql, failing closed, and refuses a parse with no statement.
func parse(sql string) (*pg_query.ParseResult, error) {
	if strings.IndexByte(sql, 0) >= 0 {
		// The parser reads a C string and would stop at the NUL.
		return nil, fmt.Errorf("%w: NUL byte in input", ErrParse)
	}
	if !utf8.ValidString(sql) {
		return nil, fmt.Errorf("%w: input is not valid UTF-8", ErrParse)
	}
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrParse, err.Error())
	}
	if len(tree.Stmts) == 0 {
		return nil, ErrEmpty
	}
	return tree, nil
}

// classifyTree classifies each statement of a parse of sql (which gives
// each statement's text).
func classifyTree(sql string, tree *pg_query.ParseResult, lineage bool) *Result {
	res := &Result{Statements: make([]Statement, 0, len(tree.Stmts))}
	for _, raw := range tree.Stmts {
		a := &acc{}
		// The fingerprint sees the list of statements at depth 0 and
		// each RawStmt at depth 1.
		w := &walker{a: a, depth: 1}
		if raw.Stmt != nil {
			m := raw.Stmt.ProtoReflect()
			if fd := m.WhichOneof(nodeOneof); fd != nil {
				inner := m.Get(fd).Message().Interface()
				if !w.stmt(inner, true) {
					w.visit(inner)
				}
			}
		}
		st := a.statement(stmtText(sql, raw))
		if lineage {
			lin := statementLineage(raw.Stmt)
			st.Targets, st.Sources, st.Copies, st.Inputs = lin.targets, lin.sources, lin.copies, lin.inputs
			// A write's errors can echo the row it touched, every column of
			// it ("Failing row contains (...)"): the written relations are
			// inputs whole.
			for _, w := range st.Writes {
				if !slices.Contains(st.Inputs, w+".*") {
					st.Inputs = append(st.Inputs, w+".*")
				}
			}
		}
		res.Statements = append(res.Statements, st)
	}
	return res
}

// stmtText cuts one statement out of the input by the parser's location
// and length (bytes; a length of 0 means "to the end").
func stmtText(sql string, raw *pg_query.RawStmt) string {
	start := int(raw.StmtLocation)
	if start < 0 || start > len(sql) {
		start = 0
	}
	end := len(sql)
	if raw.StmtLen > 0 && start+int(raw.StmtLen) <= len(sql) {
		end = start + int(raw.StmtLen)
	}
	return strings.TrimSpace(sql[start:end])
}

// cacheKey digests the query fingerprint with every classified field, so
// that equal keys mean equal classifications even where pg_query's
// fingerprint ignores what changed (literals, aliases, digits in table
// names, BEGIN options, prepared-statement names, depth beyond 100).
// Every string is length-prefixed and every list counted, so no two
// different classifications encode alike.
func cacheKey(fp string, stmts []Statement) string {
	var e keyEncoder
	e.str("sqlclass/v2")
	e.str(fp)
	e.num(len(stmts))
	for _, s := range stmts {
		e.str(string(s.Kind))
		e.str(s.Command)
		e.list(s.Reads)
		e.list(s.Writes)
		e.list(s.Functions)
		e.num(len(s.Flags))
		for _, f := range s.Flags {
			e.str(string(f))
		}
		e.str(s.Setting)
		e.str(s.PreparedName)
		e.str(s.Cursor)
		e.list(s.Columns)
		e.list(s.Sources)
		e.list(s.Copies)
		e.list(s.Inputs)
		e.num(len(s.Targets))
		for _, t := range s.Targets {
			e.list(t)
		}
	}
	sum := sha256.Sum256(e.buf)
	return hex.EncodeToString(sum[:16])
}

type keyEncoder struct{ buf []byte }

func (e *keyEncoder) num(n int) { e.buf = binary.AppendUvarint(e.buf, uint64(n)) }

func (e *keyEncoder) str(s string) {
	e.num(len(s))
	e.buf = append(e.buf, s...)
}

func (e *keyEncoder) list(l []string) {
	e.num(len(l))
	for _, s := range l {
		e.str(s)
	}
}
