package sqlclass

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// fnEffect is what calling a known function implies.
type fnEffect struct {
	flags flagSet
	kind  Kind // the statement's kind is raised to this; "" leaves it alone
}

var (
	fileFn     = fnEffect{flagsOf(FlagFileAccess, FlagSideEffectFunc, FlagLiteralSensitive), KindAdmin}
	signalFn   = fnEffect{flagsOf(FlagBackendSignal, FlagSideEffectFunc), KindAdmin}
	replFn     = fnEffect{flagsOf(FlagReplication, FlagSideEffectFunc), KindAdmin}
	adminFn    = fnEffect{flagsOf(FlagSideEffectFunc), KindAdmin}
	dynamicFn  = fnEffect{flagsOf(FlagDynamicSQL, FlagSideEffectFunc, FlagLiteralSensitive), KindUtility}
	writeFn    = fnEffect{flagsOf(FlagSideEffectFunc), KindWrite}
	seqFn      = fnEffect{flagsOf(FlagSideEffectFunc, FlagLiteralSensitive), KindWrite}
	effectFn   = fnEffect{flagsOf(FlagSideEffectFunc), ""}
	lockFn     = fnEffect{flagsOf(FlagSideEffectFunc, FlagLock), ""}
	notifyFn   = fnEffect{flagsOf(FlagListenNotify, FlagSideEffectFunc), KindSession}
	relationFn = fnEffect{flagsOf(FlagLiteralSensitive), ""}
)

// knownFunctions maps a lower-cased function name (schema ignored) to its
// effect. set_config is handled apart (see settings.go).
var knownFunctions = map[string]fnEffect{
	// Server files.
	"pg_read_file": fileFn, "pg_read_binary_file": fileFn, "pg_stat_file": fileFn,
	"pg_ls_dir": fileFn, "lo_import": fileFn, "lo_export": fileFn,
	"pg_file_write": fileFn, "pg_file_rename": fileFn, "pg_file_unlink": fileFn,
	"pg_file_sync": fileFn, "pg_file_read": fileFn, "pg_file_length": fileFn,
	"pg_logdir_ls": fileFn,

	// Signals and reloads.
	"pg_terminate_backend": signalFn, "pg_cancel_backend": signalFn,
	"pg_rotate_logfile": signalFn, "pg_rotate_logfile_old": signalFn,
	"pg_promote": signalFn, "pg_log_backend_memory_contexts": signalFn,
	"pg_signal_backend": signalFn,
	"pg_reload_conf":    {flagsOf(FlagBackendSignal, FlagConfigChange, FlagSideEffectFunc), KindAdmin},

	// Replication.
	"pg_create_physical_replication_slot": replFn, "pg_create_logical_replication_slot": replFn,
	"pg_drop_replication_slot": replFn, "pg_copy_physical_replication_slot": replFn,
	"pg_copy_logical_replication_slot": replFn, "pg_replication_slot_advance": replFn,
	"pg_logical_emit_message": replFn, "pg_sync_replication_slots": replFn,

	// Other administrative side effects.
	"pg_switch_wal": adminFn, "pg_switch_xlog": adminFn, "pg_create_restore_point": adminFn,
	"pg_backup_start": adminFn, "pg_backup_stop": adminFn, "pg_start_backup": adminFn,
	"pg_stop_backup": adminFn, "pg_wal_replay_pause": adminFn, "pg_wal_replay_resume": adminFn,
	"pg_import_system_collations": adminFn, "pg_log_standby_snapshot": adminFn,
	"pg_truncate_visibility_map": adminFn, "brin_summarize_new_values": adminFn,
	"brin_summarize_range": adminFn, "brin_desummarize_range": adminFn,
	"gin_clean_pending_list": adminFn, "pg_prewarm": adminFn,
	"pg_stat_statements_reset": adminFn, "pg_stat_force_next_flush": adminFn,

	// Dynamic SQL: the query or table is a string.
	"ts_stat": dynamicFn, "crosstab": dynamicFn, "crosstab2": dynamicFn,
	"crosstab3": dynamicFn, "crosstab4": dynamicFn, "connectby": dynamicFn,

	// Writes outside any table list.
	"nextval": seqFn, "setval": seqFn,
	"lo_create": writeFn, "lo_creat": writeFn, "lo_unlink": writeFn, "lo_write": writeFn,
	"lowrite": writeFn, "lo_put": writeFn, "lo_truncate": writeFn, "lo_truncate64": writeFn,
	"lo_from_bytea": writeFn,

	// Side effects that leave the kind alone.
	"lo_open": effectFn, "pg_sleep": effectFn, "pg_sleep_for": effectFn,
	"pg_sleep_until": effectFn, "txid_current": effectFn, "pg_current_xact_id": effectFn,

	"pg_notify": notifyFn,

	// A table named by a literal.
	"currval": relationFn, "pgstattuple": relationFn, "pgstattuple_approx": relationFn,
	"pgstatindex": relationFn, "pg_relation_size": relationFn, "pg_table_size": relationFn,
	"pg_indexes_size": relationFn, "pg_total_relation_size": relationFn,
	"pg_relation_filepath": relationFn, "pg_relation_filenode": relationFn,
	"has_table_privilege": relationFn, "has_column_privilege": relationFn,
	"pg_get_serial_sequence": relationFn, "to_regclass": relationFn,
}

// prefixFunctions are matched when a name is not in knownFunctions.
var prefixFunctions = []struct {
	prefix string
	effect fnEffect
}{
	{"dblink", dynamicFn},
	{"query_to_xml", dynamicFn},
	{"table_to_xml", dynamicFn},
	{"cursor_to_xml", dynamicFn},
	{"schema_to_xml", dynamicFn},
	{"database_to_xml", dynamicFn},
	{"pg_ls_", fileFn},
	{"pg_file_", fileFn},
	{"pg_logical_slot_", replFn},
	{"pg_replication_origin_", replFn},
	{"pg_advisory_", lockFn},
	{"pg_try_advisory_", lockFn},
	{"pg_stat_reset", adminFn},
}

// lookupFunction returns the effect of calling the function named name
// (last part of the qualified name, any case).
func lookupFunction(name string, nargs int) (fnEffect, bool) {
	name = strings.ToLower(name)
	if e, ok := knownFunctions[name]; ok {
		return e, true
	}
	if name == "ts_rewrite" && nargs == 2 { // ts_rewrite(tsquery, 'SELECT ...')
		return dynamicFn, true
	}
	for _, p := range prefixFunctions {
		if strings.HasPrefix(name, p.prefix) {
			return p.effect, true
		}
	}
	return fnEffect{}, false
}

// funcParts is a call's function name: ["name"] or ["schema", "name"].
func funcParts(fc *pg_query.FuncCall) []string {
	parts := make([]string, 0, 2)
	for _, n := range fc.Funcname {
		if s, ok := n.Node.(*pg_query.Node_String_); ok {
			parts = append(parts, s.String_.Sval)
		}
	}
	// SQL-syntax functions (EXTRACT, SUBSTRING ... FROM, ...) come back
	// as pg_catalog.x though nobody wrote the schema.
	if fc.Funcformat == pg_query.CoercionForm_COERCE_SQL_SYNTAX && len(parts) == 2 && parts[0] == "pg_catalog" {
		parts = parts[1:]
	}
	if len(parts) > 2 {
		parts = parts[len(parts)-2:]
	}
	return parts
}

// readOnlyVolatile are PostgreSQL's own volatile functions that write
// nothing (a volatile function is one whose result may change at every
// call, not necessarily one that writes). The rest of PostgreSQL's
// functions are known by name above or are immutable or stable.
var readOnlyVolatile = map[string]bool{
	"random": true, "random_normal": true, "clock_timestamp": true, "timeofday": true, "gen_random_uuid": true,
	"currval": true, "lastval": true, "current_query": true, "pg_blocking_pids": true, "pg_safe_snapshot_blocking_pids": true,
	"pg_is_in_recovery": true, "pg_is_wal_replay_paused": true, "pg_get_wal_replay_pause_state": true, "pg_jit_available": true,
	"pg_last_xact_replay_timestamp": true, "pg_last_committed_xact": true, "pg_xact_commit_timestamp": true,
	"pg_xact_commit_timestamp_origin": true, "pg_xact_status": true, "txid_status": true, "pg_lock_status": true,
	"pg_notification_queue_usage": true, "pg_database_size": true, "pg_relation_size": true, "pg_table_size": true,
	"pg_indexes_size": true, "pg_total_relation_size": true, "pg_tablespace_size": true, "pg_stat_have_stats": true,
	"pg_sequence_last_value": true, "pg_partition_ancestors": true, "pg_partition_tree": true, "pg_prepared_xact": true,
	"pg_get_multixact_members": true, "pg_collation_actual_version": true, "pg_database_collation_actual_version": true,
	"pg_get_backend_memory_contexts": true, "pg_get_shmem_allocations": true, "pg_hba_file_rules": true,
	"pg_ident_file_mappings": true, "pg_show_all_file_settings": true, "pg_current_logfile": true,
	"pg_get_wal_resource_managers": true, "pg_stat_get_recovery_prefetch": true, "pg_show_replication_origin_status": true,
	"pg_isolation_test_session_is_blocked": true, "pg_stat_clear_snapshot": true, "setseed": true, "pg_export_snapshot": true,
	"ts_rewrite": true, // the two-argument form runs a query: known above as dynamic SQL
}

// readOnlyVolatilePrefixes extend readOnlyVolatile.
var readOnlyVolatilePrefixes = []string{"pg_stat_get_xact_", "pg_control_", "pg_current_wal_", "pg_last_wal_"}

// readOnlyFunction reports whether a function is known to write nothing
// and to read nothing but its arguments (and the catalogs): one of
// PostgreSQL's own (unqualified or in pg_catalog) that is immutable or
// stable, or volatile but on the list above. A function of the database's
// own (user-defined, or from an extension) is not: its body is unknown.
func readOnlyFunction(parts []string, nargs int) bool {
	if len(parts) == 0 || (len(parts) == 2 && parts[0] != "pg_catalog") {
		return false
	}
	name := parts[len(parts)-1]
	vol, ok := builtinFunctions[name]
	if !ok {
		return false
	}
	if _, known := lookupFunction(name, nargs); known || strings.EqualFold(name, "set_config") {
		// A known effect (files, signals, writes, sleep, locks, ...).
		return false
	}
	if vol != 'v' {
		return true
	}
	if readOnlyVolatile[name] {
		return true
	}
	for _, p := range readOnlyVolatilePrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// funcCall records a function call and its known effects, then visits its
// arguments, FILTER, ORDER BY and OVER clauses. A function whose effects
// are unknown (readOnlyFunction) may write: the statement is a write.
func (w *walker) funcCall(fc *pg_query.FuncCall) {
	parts := funcParts(fc)
	if len(parts) == 0 {
		w.fields(fc.ProtoReflect())
		return
	}
	name := parts[len(parts)-1]
	w.a.functions = append(w.a.functions, strings.Join(parts, "."))

	if strings.EqualFold(name, "set_config") {
		w.setConfig(fc.Args)
	} else if e, ok := lookupFunction(name, len(fc.Args)); ok {
		w.a.flags |= e.flags
		w.a.fnFlags |= e.flags
		if e.kind != "" {
			w.a.escalate(e.kind)
		}
	} else if !readOnlyFunction(parts, len(fc.Args)) {
		f := flagsOf(FlagOpaqueFunction, FlagSideEffectFunc)
		w.a.flags |= f
		w.a.fnFlags |= f
		w.a.escalate(KindWrite)
	}
	w.fields(fc.ProtoReflect())
}
