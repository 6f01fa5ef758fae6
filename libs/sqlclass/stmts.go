package sqlclass

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// cmd sets the statement's command name, for the top-level statement only.
func (w *walker) cmd(root bool, c string) {
	if root && w.a.command == "" {
		w.a.command = c
	}
}

// stmt classifies a statement node. root is true for the statement the
// input holds, false for one nested in it (a CTE, EXPLAIN, PREPARE, CREATE
// SCHEMA ...). It reports false if m is not a statement.
func (w *walker) stmt(m proto.Message, root bool) bool {
	switch x := m.(type) {
	case *pg_query.SelectStmt:
		if x.IntoClause != nil {
			w.cmd(root, "SELECT INTO")
		}
		w.cmd(root, "SELECT")
		w.selectStmt(x)
	case *pg_query.InsertStmt:
		w.cmd(root, "INSERT")
		w.insertStmt(x)
	case *pg_query.UpdateStmt:
		w.cmd(root, "UPDATE")
		w.updateStmt(x)
	case *pg_query.DeleteStmt:
		w.cmd(root, "DELETE")
		w.deleteStmt(x)
	case *pg_query.MergeStmt:
		w.cmd(root, "MERGE")
		w.mergeStmt(x)
	case *pg_query.CopyStmt:
		w.cmd(root, "COPY")
		w.copyStmt(x)
	case *pg_query.ExplainStmt:
		w.cmd(root, "EXPLAIN")
		w.explainStmt(x)
	case *pg_query.PrepareStmt:
		w.cmd(root, "PREPARE")
		w.a.add(FlagPrepare, FlagLiteralSensitive) // pg_query's fingerprint ignores the name
		w.a.prepared = x.Name
		w.fields(x.ProtoReflect())
	case *pg_query.ExecuteStmt:
		w.cmd(root, "EXECUTE")
		w.a.add(FlagExecute, FlagLiteralSensitive)
		w.a.prepared = x.Name
		w.a.escalate(KindUtility)
		w.fields(x.ProtoReflect())
	case *pg_query.DeallocateStmt:
		w.cmd(root, "DEALLOCATE")
		w.a.add(FlagDeallocate, FlagLiteralSensitive)
		w.a.prepared = x.Name
		w.a.escalate(KindUtility)
	case *pg_query.DeclareCursorStmt:
		w.cmd(root, "DECLARE CURSOR")
		w.a.add(FlagCursor, FlagLiteralSensitive) // the fingerprint ignores cursor names
		w.a.cursor = x.Portalname
		w.fields(x.ProtoReflect())
	case *pg_query.FetchStmt:
		if x.Ismove {
			w.cmd(root, "MOVE")
		}
		w.cmd(root, "FETCH")
		w.a.add(FlagCursor, FlagLiteralSensitive)
		w.a.cursor = x.Portalname
		w.a.escalate(KindUtility)
	case *pg_query.ClosePortalStmt:
		w.cmd(root, "CLOSE CURSOR")
		w.a.add(FlagCursor, FlagLiteralSensitive)
		w.a.cursor = x.Portalname
		w.a.escalate(KindUtility)
	case *pg_query.VariableSetStmt:
		w.variableSet(x, root)
	case *pg_query.VariableShowStmt:
		w.cmd(root, "SHOW")
		w.a.setSetting(lower(x.Name))
		w.a.escalate(KindRead)
	case *pg_query.TransactionStmt:
		w.transactionStmt(x, root)
	case *pg_query.ConstraintsSetStmt:
		w.cmd(root, "SET CONSTRAINTS")
		w.a.escalate(KindTransaction)
	case *pg_query.DiscardStmt:
		w.cmd(root, "DISCARD")
		w.a.escalate(KindSession)
		if x.Target == pg_query.DiscardMode_DISCARD_ALL {
			// DISCARD ALL = SET SESSION AUTHORIZATION DEFAULT; RESET ALL;
			// DEALLOCATE ALL; CLOSE ALL; UNLISTEN *; ...
			w.a.add(FlagRoleChange, FlagLexerSetting, FlagSearchPath, FlagReadWriteTx,
				FlagDeallocate, FlagCursor, FlagListenNotify)
			w.a.escalate(KindPrivilege)
		}
	case *pg_query.ListenStmt:
		w.cmd(root, "LISTEN")
		w.a.add(FlagListenNotify)
		w.a.escalate(KindSession)
	case *pg_query.UnlistenStmt:
		w.cmd(root, "UNLISTEN")
		w.a.add(FlagListenNotify)
		w.a.escalate(KindSession)
	case *pg_query.NotifyStmt:
		w.cmd(root, "NOTIFY")
		w.a.add(FlagListenNotify)
		w.a.escalate(KindSession)
	case *pg_query.DoStmt:
		w.cmd(root, "DO")
		// pg_query's fingerprint ignores the body and the language.
		w.a.add(FlagDynamicSQL, FlagLiteralSensitive)
		w.a.escalate(KindUtility)
		if lang := defString(x.Args, "language"); untrustedLanguages[lower(lang)] {
			w.a.add(FlagExtension)
			w.a.escalate(KindAdmin)
		}
	case *pg_query.CallStmt:
		w.cmd(root, "CALL")
		w.a.add(FlagCall)
		w.a.escalate(KindUtility)
		w.fields(x.ProtoReflect())
	case *pg_query.LockStmt:
		w.cmd(root, "LOCK TABLE")
		w.a.add(FlagLock)
		w.a.escalate(KindUtility)
		w.fields(x.ProtoReflect())
	case *pg_query.CreateTableAsStmt:
		if x.Objtype == pg_query.ObjectType_OBJECT_MATVIEW {
			w.cmd(root, "CREATE MATERIALIZED VIEW")
		}
		w.cmd(root, "CREATE TABLE AS")
		w.a.escalate(KindDDL)
		w.fields(x.ProtoReflect())
	case *pg_query.RefreshMatViewStmt:
		w.cmd(root, "REFRESH MATERIALIZED VIEW")
		w.a.escalate(KindWrite)
		w.targets(x, "relation")
	case *pg_query.TruncateStmt:
		w.cmd(root, "TRUNCATE")
		w.a.add(FlagUnbounded)
		w.a.escalate(KindDDL)
		w.targets(x, "relations")
	case *pg_query.CreateFunctionStmt:
		w.createFunction(x, root)
	default:
		return w.utilityStmt(m, root)
	}
	return true
}

// targets records the RangeVars held by the named fields of m as writes and
// visits the other fields.
func (w *walker) targets(m proto.Message, names ...string) {
	r := m.ProtoReflect()
	fds := r.Descriptor().Fields()
	for _, name := range names {
		fd := fds.ByName(protoreflect.Name(name))
		if fd == nil || !r.Has(fd) {
			continue
		}
		v := r.Get(fd)
		if fd.IsList() {
			for i := range v.List().Len() {
				w.writeAny(v.List().Get(i).Message().Interface())
			}
		} else {
			w.writeAny(v.Message().Interface())
		}
	}
	skip := make([]protoreflect.Name, len(names))
	for i, n := range names {
		skip[i] = protoreflect.Name(n)
	}
	w.fields(r, skip...)
}

// writeAny records a write target held as a RangeVar, a Node wrapping one,
// or a VacuumRelation; anything else is visited.
func (w *walker) writeAny(m proto.Message) {
	switch x := m.(type) {
	case *pg_query.RangeVar:
		w.writeRel(x)
	case *pg_query.Node:
		switch y := x.Node.(type) {
		case *pg_query.Node_RangeVar:
			w.writeRel(y.RangeVar)
		case *pg_query.Node_VacuumRelation:
			w.writeRel(y.VacuumRelation.Relation)
			w.fields(y.VacuumRelation.ProtoReflect(), "relation")
		default:
			w.node(x)
		}
	default:
		w.visit(m)
	}
}

func (w *walker) transactionStmt(x *pg_query.TransactionStmt, root bool) {
	w.a.escalate(KindTransaction)
	switch x.Kind {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN:
		w.cmd(root, "BEGIN")
		w.transactionOptions(x.Options)
	case pg_query.TransactionStmtKind_TRANS_STMT_START:
		w.cmd(root, "START TRANSACTION")
		w.transactionOptions(x.Options)
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:
		w.cmd(root, "COMMIT")
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		w.cmd(root, "ROLLBACK")
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		w.cmd(root, "SAVEPOINT")
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		w.cmd(root, "RELEASE")
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		w.cmd(root, "ROLLBACK TO SAVEPOINT")
	case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		w.cmd(root, "PREPARE TRANSACTION")
		w.a.add(FlagTwoPhase)
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		w.cmd(root, "COMMIT PREPARED")
		w.a.add(FlagTwoPhase)
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		w.cmd(root, "ROLLBACK PREPARED")
		w.a.add(FlagTwoPhase)
	default:
		w.cmd(root, "TRANSACTION")
	}
}

// copyStmt: COPY FROM writes the table, COPY TO reads it or runs the query
// (which may be a DELETE ... RETURNING). A file or program on the server is
// an administrative act whatever the direction.
func (w *walker) copyStmt(x *pg_query.CopyStmt) {
	if x.IsFrom {
		w.a.escalate(KindWrite)
		w.writeRel(x.Relation)
	} else {
		w.a.escalate(KindRead)
		w.readRel(x.Relation)
	}
	switch {
	case x.IsProgram:
		w.a.add(FlagProgramExec, FlagLiteralSensitive)
		w.a.escalate(KindAdmin)
	case x.Filename != "":
		w.a.add(FlagFileAccess, FlagLiteralSensitive)
		w.a.escalate(KindAdmin)
	}
	w.fields(x.ProtoReflect(), "relation")
}

// explainStmt: EXPLAIN ANALYZE runs its statement, so it is that
// statement plus explain_analyze. Plain EXPLAIN only plans: it is a read of
// the inner statement's tables, keeping the flags its function calls carry
// (the planner may evaluate stable functions) but not its writes or kind.
func (w *walker) explainStmt(x *pg_query.ExplainStmt) {
	if explainAnalyze(x.Options) {
		w.a.add(FlagExplainAnalyze)
		w.down(1)
		w.node(x.Query)
		w.down(-1)
		w.a.escalate(KindRead)
		return
	}
	w.a.escalate(KindRead)
	inner := &walker{a: &acc{}, depth: w.depth + 1}
	inner.node(x.Query)
	w.a.reads = append(w.a.reads, inner.a.reads...)
	w.a.functions = append(w.a.functions, inner.a.functions...)
	w.a.flags |= inner.a.fnFlags | inner.a.flags&flagsOf(FlagLiteralSensitive)
	w.a.fnFlags |= inner.a.fnFlags
	if inner.a.setting != "" {
		w.a.setSetting(inner.a.setting)
	}
	w.a.prepared = inner.a.prepared
}

// untrustedLanguages can reach the operating system; functions and DO
// blocks in them need a superuser.
var untrustedLanguages = map[string]bool{
	"c": true, "internal": true, "plpythonu": true, "plpython2u": true,
	"plpython3u": true, "plperlu": true, "pltclu": true, "plsh": true, "plr": true,
	"pljavau": true, "plv8u": true,
}

// createFunction: a function body is code this package does not analyse
// (dynamic_sql). A SQL-standard body (BEGIN ATOMIC / RETURN) is walked for
// its tables and calls. pg_query's fingerprint ignores every option,
// LANGUAGE and SECURITY DEFINER included, so it is literal_sensitive.
func (w *walker) createFunction(x *pg_query.CreateFunctionStmt, root bool) {
	if x.IsProcedure {
		w.cmd(root, "CREATE PROCEDURE")
	}
	w.cmd(root, "CREATE FUNCTION")
	w.a.add(FlagDynamicSQL, FlagLiteralSensitive)
	w.a.escalate(KindDDL)
	if lang := lower(defString(x.Options, "language")); untrustedLanguages[lang] {
		w.a.add(FlagExtension)
		if lang == "c" {
			w.a.add(FlagFileAccess) // AS 'library' loads a shared object
		}
		w.a.escalate(KindAdmin)
	}
	w.fields(x.ProtoReflect())
}

// defString returns the string value of DefElem name in opts.
func defString(opts []*pg_query.Node, name string) string {
	for _, o := range opts {
		if d := o.GetDefElem(); d != nil && d.Defname == name && d.Arg != nil {
			if s := d.Arg.GetString_(); s != nil {
				return s.Sval
			}
		}
	}
	return ""
}
