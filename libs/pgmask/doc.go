// Package pgmask masks PostgreSQL results: what the mask rules of a policy
// decision mean on one target, and the masking of what the target sends
// back (DataRow values, error and notice texts) under them. It is shared by
// every worker that reads a PostgreSQL target on a user's behalf (the
// PostgreSQL worker relays the wire protocol; others run queries
// themselves), so that they mask the same values the same way.
//
// A Catalog is resolved once per target connection: it maps the rules'
// "table.column" names to table OIDs and attribute numbers, so that a
// masked column is masked whatever the query calls it, and finds the views
// that read one. A Plan is built once per set of mask rules from a Catalog
// and a masking.Masker; it is then called for every result column and row.
//
// A value is masked in one of three ways:
//
//   - whole, when it comes from a masked column (RowDescription names the
//     column) or is computed from one (its Lineage, from the classifier,
//     says so): the value is replaced by a type-correct masked value, or
//     NULL where no masked value of its type exists (bytea);
//   - scanned, when it is text: the detectors mask what they find in it;
//   - passed, when it is a binary non-text value: only lineage applies.
//
// Plans fail closed: a row that cannot be decoded is refused
// (ErrUndecodable), never passed through, and a value whose origin the
// classifier could not follow (UnknownSource) counts as derived from masked
// data.
//
// A Plan and a Catalog never change once built and may be shared between
// goroutines; Stats are per command and not safe for concurrent use.
package pgmask
