package sqlclass

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// TestUtilityNamesExist checks that every statement type named in the
// utilities table is a real pg_query message: a typo would silently send
// that statement to the unknown-statement path.
func TestUtilityNamesExist(t *testing.T) {
	pkg := (&pg_query.Node{}).ProtoReflect().Descriptor().ParentFile().Package()
	for name := range utilities {
		_, err := protoregistry.GlobalTypes.FindMessageByName(pkg.Append(name))
		require.NoError(t, err, "utilities[%q] is not a pg_query message", name)
	}
}

// TestEveryStatementTypeIsKnown lists the statement types of the Node oneof
// and checks that each one has a classification of its own rather than the
// fail-closed default.
func TestEveryStatementTypeIsKnown(t *testing.T) {
	handled := map[protoreflect.Name]bool{
		// handled by type switch in stmts.go / ddl.go
		"SelectStmt": true, "InsertStmt": true, "UpdateStmt": true, "DeleteStmt": true,
		"MergeStmt": true, "CopyStmt": true, "ExplainStmt": true, "PrepareStmt": true,
		"ExecuteStmt": true, "DeallocateStmt": true, "DeclareCursorStmt": true,
		"FetchStmt": true, "ClosePortalStmt": true, "VariableSetStmt": true,
		"VariableShowStmt": true, "TransactionStmt": true, "ConstraintsSetStmt": true,
		"DiscardStmt": true, "ListenStmt": true, "UnlistenStmt": true, "NotifyStmt": true,
		"DoStmt": true, "CallStmt": true, "LockStmt": true, "CreateTableAsStmt": true,
		"RefreshMatViewStmt": true, "TruncateStmt": true, "CreateFunctionStmt": true,
		"AlterTableStmt": true, "DropStmt": true, "RenameStmt": true,
		"AlterObjectSchemaStmt": true, "AlterOwnerStmt": true, "DefineStmt": true,
		"GrantStmt": true, "CreateRoleStmt": true, "VacuumStmt": true,
		// not statements of their own
		"RawStmt": true, "SetOperationStmt": true,
	}
	oneof := (&pg_query.Node{}).ProtoReflect().Descriptor().Oneofs().ByName("node")
	fields := oneof.Fields()
	for i := range fields.Len() {
		md := fields.Get(i).Message()
		if md == nil {
			continue
		}
		name := md.Name()
		if len(name) < 4 || name[len(name)-4:] != "Stmt" {
			continue
		}
		_, inTable := utilities[name]
		require.True(t, inTable || handled[name], "statement type %s has no classification", name)
	}
}
