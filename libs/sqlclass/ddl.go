package sqlclass

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// utility describes a statement type classified by table alone.
type utility struct {
	cmd     string
	kind    Kind
	flags   flagSet
	targets []string // fields holding RangeVars the statement writes or redefines
	skip    []string // fields holding RangeVars that are not tables
}

var (
	ext      = flagsOf(FlagExtension)
	repl     = flagsOf(FlagReplication)
	roles    = flagsOf(FlagRoleManagement)
	rolesCfg = flagsOf(FlagRoleManagement, FlagConfigChange)
	cfg      = flagsOf(FlagConfigChange)
)

var utilities = map[protoreflect.Name]utility{
	"CreateStmt":                   {cmd: "CREATE TABLE", kind: KindDDL, targets: []string{"relation"}},
	"CreateForeignTableStmt":       {cmd: "CREATE FOREIGN TABLE", kind: KindDDL},
	"IndexStmt":                    {cmd: "CREATE INDEX", kind: KindDDL, targets: []string{"relation"}},
	"CreateSchemaStmt":             {cmd: "CREATE SCHEMA", kind: KindDDL},
	"ViewStmt":                     {cmd: "CREATE VIEW", kind: KindDDL, targets: []string{"view"}},
	"CreateSeqStmt":                {cmd: "CREATE SEQUENCE", kind: KindDDL, targets: []string{"sequence"}},
	"AlterSeqStmt":                 {cmd: "ALTER SEQUENCE", kind: KindDDL, targets: []string{"sequence"}},
	"CreateTrigStmt":               {cmd: "CREATE TRIGGER", kind: KindDDL, targets: []string{"relation"}},
	"RuleStmt":                     {cmd: "CREATE RULE", kind: KindDDL, targets: []string{"relation"}},
	"CreatePolicyStmt":             {cmd: "CREATE POLICY", kind: KindDDL, targets: []string{"table"}},
	"AlterPolicyStmt":              {cmd: "ALTER POLICY", kind: KindDDL, targets: []string{"table"}},
	"CreateStatsStmt":              {cmd: "CREATE STATISTICS", kind: KindDDL},
	"AlterStatsStmt":               {cmd: "ALTER STATISTICS", kind: KindDDL},
	"CreateDomainStmt":             {cmd: "CREATE DOMAIN", kind: KindDDL},
	"AlterDomainStmt":              {cmd: "ALTER DOMAIN", kind: KindDDL},
	"CompositeTypeStmt":            {cmd: "CREATE TYPE", kind: KindDDL, skip: []string{"typevar"}},
	"CreateEnumStmt":               {cmd: "CREATE TYPE", kind: KindDDL},
	"CreateRangeStmt":              {cmd: "CREATE TYPE", kind: KindDDL},
	"AlterEnumStmt":                {cmd: "ALTER TYPE", kind: KindDDL},
	"AlterTypeStmt":                {cmd: "ALTER TYPE", kind: KindDDL},
	"AlterCollationStmt":           {cmd: "ALTER COLLATION", kind: KindDDL},
	"CreateOpClassStmt":            {cmd: "CREATE OPERATOR CLASS", kind: KindDDL},
	"CreateOpFamilyStmt":           {cmd: "CREATE OPERATOR FAMILY", kind: KindDDL},
	"AlterOpFamilyStmt":            {cmd: "ALTER OPERATOR FAMILY", kind: KindDDL},
	"AlterOperatorStmt":            {cmd: "ALTER OPERATOR", kind: KindDDL},
	"CreateConversionStmt":         {cmd: "CREATE CONVERSION", kind: KindDDL},
	"CreateCastStmt":               {cmd: "CREATE CAST", kind: KindDDL},
	"CreateTransformStmt":          {cmd: "CREATE TRANSFORM", kind: KindDDL},
	"AlterTSDictionaryStmt":        {cmd: "ALTER TEXT SEARCH DICTIONARY", kind: KindDDL},
	"AlterTSConfigurationStmt":     {cmd: "ALTER TEXT SEARCH CONFIGURATION", kind: KindDDL},
	"AlterFunctionStmt":            {cmd: "ALTER FUNCTION", kind: KindDDL},
	"AlterObjectDependsStmt":       {cmd: "ALTER EXTENSION DEPENDS", kind: KindDDL, targets: []string{"relation"}},
	"ReplicaIdentityStmt":          {cmd: "ALTER TABLE", kind: KindDDL},
	"CreateForeignServerStmt":      {cmd: "CREATE SERVER", kind: KindDDL},
	"AlterForeignServerStmt":       {cmd: "ALTER SERVER", kind: KindDDL},
	"CreateUserMappingStmt":        {cmd: "CREATE USER MAPPING", kind: KindDDL},
	"AlterUserMappingStmt":         {cmd: "ALTER USER MAPPING", kind: KindDDL},
	"DropUserMappingStmt":          {cmd: "DROP USER MAPPING", kind: KindDDL},
	"ImportForeignSchemaStmt":      {cmd: "IMPORT FOREIGN SCHEMA", kind: KindDDL},
	"CreateAmStmt":                 {cmd: "CREATE ACCESS METHOD", kind: KindAdmin},
	"CreateFdwStmt":                {cmd: "CREATE FOREIGN DATA WRAPPER", kind: KindAdmin},
	"AlterFdwStmt":                 {cmd: "ALTER FOREIGN DATA WRAPPER", kind: KindAdmin},
	"CreateEventTrigStmt":          {cmd: "CREATE EVENT TRIGGER", kind: KindAdmin},
	"AlterEventTrigStmt":           {cmd: "ALTER EVENT TRIGGER", kind: KindAdmin},
	"CreatePLangStmt":              {cmd: "CREATE LANGUAGE", kind: KindAdmin, flags: ext},
	"CreateExtensionStmt":          {cmd: "CREATE EXTENSION", kind: KindAdmin, flags: ext},
	"AlterExtensionStmt":           {cmd: "ALTER EXTENSION", kind: KindAdmin, flags: ext},
	"AlterExtensionContentsStmt":   {cmd: "ALTER EXTENSION", kind: KindAdmin, flags: ext},
	"LoadStmt":                     {cmd: "LOAD", kind: KindAdmin, flags: flagsOf(FlagExtension, FlagFileAccess, FlagLiteralSensitive)},
	"CreatedbStmt":                 {cmd: "CREATE DATABASE", kind: KindAdmin},
	"AlterDatabaseStmt":            {cmd: "ALTER DATABASE", kind: KindAdmin},
	"AlterDatabaseRefreshCollStmt": {cmd: "ALTER DATABASE", kind: KindAdmin},
	"AlterDatabaseSetStmt":         {cmd: "ALTER DATABASE", kind: KindAdmin, flags: cfg},
	"DropdbStmt":                   {cmd: "DROP DATABASE", kind: KindAdmin, flags: flagsOf(FlagDropDatabase)},
	"AlterSystemStmt":              {cmd: "ALTER SYSTEM", kind: KindAdmin, flags: cfg},
	"CreateTableSpaceStmt":         {cmd: "CREATE TABLESPACE", kind: KindAdmin, flags: flagsOf(FlagFileAccess, FlagLiteralSensitive)},
	"DropTableSpaceStmt":           {cmd: "DROP TABLESPACE", kind: KindAdmin},
	"AlterTableSpaceOptionsStmt":   {cmd: "ALTER TABLESPACE", kind: KindAdmin},
	"AlterTableMoveAllStmt":        {cmd: "ALTER TABLE", kind: KindAdmin},
	"ClusterStmt":                  {cmd: "CLUSTER", kind: KindAdmin, targets: []string{"relation"}},
	"ReindexStmt":                  {cmd: "REINDEX", kind: KindAdmin, targets: []string{"relation"}},
	"CheckPointStmt":               {cmd: "CHECKPOINT", kind: KindAdmin},
	"CreatePublicationStmt":        {cmd: "CREATE PUBLICATION", kind: KindAdmin, flags: repl},
	"AlterPublicationStmt":         {cmd: "ALTER PUBLICATION", kind: KindAdmin, flags: repl},
	"CreateSubscriptionStmt":       {cmd: "CREATE SUBSCRIPTION", kind: KindAdmin, flags: repl},
	"AlterSubscriptionStmt":        {cmd: "ALTER SUBSCRIPTION", kind: KindAdmin, flags: repl},
	"DropSubscriptionStmt":         {cmd: "DROP SUBSCRIPTION", kind: KindAdmin, flags: repl},
	"GrantRoleStmt":                {cmd: "GRANT", kind: KindPrivilege, flags: roles},
	"AlterDefaultPrivilegesStmt":   {cmd: "ALTER DEFAULT PRIVILEGES", kind: KindPrivilege, flags: roles},
	"AlterRoleStmt":                {cmd: "ALTER ROLE", kind: KindPrivilege, flags: roles},
	"AlterRoleSetStmt":             {cmd: "ALTER ROLE", kind: KindPrivilege, flags: rolesCfg},
	"DropRoleStmt":                 {cmd: "DROP ROLE", kind: KindPrivilege, flags: roles},
	"DropOwnedStmt":                {cmd: "DROP OWNED", kind: KindPrivilege, flags: roles},
	"ReassignOwnedStmt":            {cmd: "REASSIGN OWNED", kind: KindPrivilege, flags: roles},
	"SecLabelStmt":                 {cmd: "SECURITY LABEL", kind: KindPrivilege},
	"CommentStmt":                  {cmd: "COMMENT", kind: KindDDL},
	// Only inside a SQL-standard function body, which createFunction walks.
	"ReturnStmt":   {},
	"PLAssignStmt": {},
}

// utilityStmt classifies the statements not handled in stmt. It reports
// false if m is not a statement at all.
func (w *walker) utilityStmt(m proto.Message, root bool) bool {
	r := m.ProtoReflect()
	name := r.Descriptor().Name()
	if !strings.HasSuffix(string(name), "Stmt") {
		return false
	}
	u, known := utilities[name]
	switch x := m.(type) {
	case *pg_query.AlterTableStmt:
		u = utility{cmd: "ALTER " + objectName(x.Objtype), kind: KindDDL, targets: []string{"relation"}}
	case *pg_query.DropStmt:
		w.dropStmt(x, root)
		return true
	case *pg_query.RenameStmt:
		obj := x.RenameType
		switch obj {
		case pg_query.ObjectType_OBJECT_COLUMN, pg_query.ObjectType_OBJECT_TABCONSTRAINT,
			pg_query.ObjectType_OBJECT_ATTRIBUTE:
			// ALTER TABLE t RENAME COLUMN a TO b; RENAME CONSTRAINT
			// leaves relationType unset.
			obj = x.RelationType
			if !relationObject(obj) {
				obj = pg_query.ObjectType_OBJECT_TABLE
			}
		}
		u = utility{cmd: "ALTER " + objectName(obj), kind: KindDDL, targets: []string{"relation"}}
		w.objectTarget(x.RenameType, x.Object)
	case *pg_query.AlterObjectSchemaStmt:
		u = utility{cmd: "ALTER " + objectName(x.ObjectType), kind: KindDDL, targets: []string{"relation"}}
		w.objectTarget(x.ObjectType, x.Object)
	case *pg_query.AlterOwnerStmt:
		u = utility{cmd: "ALTER " + objectName(x.ObjectType), kind: KindPrivilege, flags: roles, targets: []string{"relation"}}
		w.objectTarget(x.ObjectType, x.Object)
	case *pg_query.CommentStmt:
		w.objectTarget(x.Objtype, x.Object)
	case *pg_query.SecLabelStmt:
		w.objectTarget(x.Objtype, x.Object)
	case *pg_query.DefineStmt:
		u = utility{cmd: "CREATE " + objectName(x.Kind), kind: KindDDL}
	case *pg_query.GrantStmt:
		u = utility{cmd: "GRANT", kind: KindPrivilege, flags: roles}
		if !x.IsGrant {
			u.cmd = "REVOKE"
		}
		if x.Targtype == pg_query.GrantTargetType_ACL_TARGET_OBJECT && relationObject(x.Objtype) {
			u.targets = []string{"objects"}
		}
	case *pg_query.GrantRoleStmt:
		if !x.IsGrant {
			u.cmd = "REVOKE"
		}
	case *pg_query.CreateRoleStmt:
		u = utility{cmd: "CREATE ROLE", kind: KindPrivilege, flags: roles}
		switch x.StmtType {
		case pg_query.RoleStmtType_ROLESTMT_USER:
			u.cmd = "CREATE USER"
		case pg_query.RoleStmtType_ROLESTMT_GROUP:
			u.cmd = "CREATE GROUP"
		}
	case *pg_query.VacuumStmt:
		u = utility{cmd: "VACUUM", kind: KindAdmin, targets: []string{"rels"}}
		if !x.IsVacuumcmd {
			u.cmd = "ANALYZE"
		} else if optionOn(x.Options, "full") {
			// VACUUM FULL rewrites each table under an exclusive lock: a
			// policy tells it from a plain VACUUM by its command.
			u.cmd = "VACUUM FULL"
		}
	default:
		if !known {
			// A statement type this package does not know: fail closed.
			u = utility{cmd: strings.ToUpper(strings.TrimSuffix(string(name), "Stmt")), kind: KindAdmin}
		}
	}
	w.cmd(root, u.cmd)
	if u.kind != "" {
		w.a.escalate(u.kind)
	}
	w.a.flags |= u.flags
	if len(u.skip) > 0 {
		skip := make([]protoreflect.Name, len(u.skip))
		for i, s := range u.skip {
			skip[i] = protoreflect.Name(s)
		}
		w.fields(r, skip...)
		return true
	}
	w.targets(m, u.targets...)
	return true
}

func (w *walker) dropStmt(x *pg_query.DropStmt, root bool) {
	w.cmd(root, "DROP "+objectName(x.RemoveType))
	switch x.RemoveType {
	case pg_query.ObjectType_OBJECT_EXTENSION, pg_query.ObjectType_OBJECT_LANGUAGE:
		w.a.add(FlagExtension)
		w.a.escalate(KindAdmin)
	case pg_query.ObjectType_OBJECT_PUBLICATION:
		w.a.add(FlagReplication)
		w.a.escalate(KindAdmin)
	case pg_query.ObjectType_OBJECT_EVENT_TRIGGER, pg_query.ObjectType_OBJECT_FDW,
		pg_query.ObjectType_OBJECT_ACCESS_METHOD:
		w.a.escalate(KindAdmin)
	default:
		w.a.escalate(KindDDL)
	}
	for _, o := range x.Objects {
		w.objectTarget(x.RemoveType, o)
	}
}

// relationObject reports whether objects of type t are relations.
func relationObject(t pg_query.ObjectType) bool {
	switch t {
	case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_VIEW,
		pg_query.ObjectType_OBJECT_MATVIEW, pg_query.ObjectType_OBJECT_FOREIGN_TABLE,
		pg_query.ObjectType_OBJECT_SEQUENCE, pg_query.ObjectType_OBJECT_INDEX:
		return true
	}
	return false
}

// objectTarget records the relation named by an object name list (DROP
// TABLE a.b, COMMENT ON COLUMN t.c, DROP TRIGGER x ON t) as a write.
func (w *walker) objectTarget(t pg_query.ObjectType, obj *pg_query.Node) {
	l := obj.GetList()
	if l == nil || len(l.Items) == 0 {
		return
	}
	items := l.Items
	switch {
	case relationObject(t):
	case len(items) > 1 && (t == pg_query.ObjectType_OBJECT_COLUMN ||
		t == pg_query.ObjectType_OBJECT_TRIGGER || t == pg_query.ObjectType_OBJECT_POLICY ||
		t == pg_query.ObjectType_OBJECT_RULE || t == pg_query.ObjectType_OBJECT_TABCONSTRAINT):
		items = items[:len(items)-1] // table, then the column, trigger, policy, rule or constraint
	default:
		return
	}
	if name := qualifiedName(items); name != "" {
		w.a.writes = append(w.a.writes, name)
		if hasDigitRun(name) {
			w.a.add(FlagLiteralSensitive)
		}
	}
}

var objectNames = map[pg_query.ObjectType]string{
	pg_query.ObjectType_OBJECT_MATVIEW:         "MATERIALIZED VIEW",
	pg_query.ObjectType_OBJECT_FDW:             "FOREIGN DATA WRAPPER",
	pg_query.ObjectType_OBJECT_FOREIGN_SERVER:  "SERVER",
	pg_query.ObjectType_OBJECT_TSCONFIGURATION: "TEXT SEARCH CONFIGURATION",
	pg_query.ObjectType_OBJECT_TSDICTIONARY:    "TEXT SEARCH DICTIONARY",
	pg_query.ObjectType_OBJECT_TSPARSER:        "TEXT SEARCH PARSER",
	pg_query.ObjectType_OBJECT_TSTEMPLATE:      "TEXT SEARCH TEMPLATE",
	pg_query.ObjectType_OBJECT_OPCLASS:         "OPERATOR CLASS",
	pg_query.ObjectType_OBJECT_OPFAMILY:        "OPERATOR FAMILY",
	pg_query.ObjectType_OBJECT_LARGEOBJECT:     "LARGE OBJECT",
	pg_query.ObjectType_OBJECT_STATISTIC_EXT:   "STATISTICS",
	pg_query.ObjectType_OBJECT_TABCONSTRAINT:   "CONSTRAINT",
	pg_query.ObjectType_OBJECT_DOMCONSTRAINT:   "CONSTRAINT",
	pg_query.ObjectType_OBJECT_ATTRIBUTE:       "ATTRIBUTE",
}

// objectName renders an object type as SQL spells it: "TABLE",
// "MATERIALIZED VIEW", "FOREIGN DATA WRAPPER".
func objectName(t pg_query.ObjectType) string {
	if s, ok := objectNames[t]; ok {
		return s
	}
	return strings.ReplaceAll(strings.TrimPrefix(t.String(), "OBJECT_"), "_", " ")
}
