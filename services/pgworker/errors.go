package pgworker

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	policyv1 "sluice.dev/sluice/proto/sluice/policy/v1"
)

// SQLSTATEs Sluice answers with.
const (
	stateInsufficientPrivilege    = "42501"
	stateInvalidPassword          = "28P01"
	stateInvalidAuthorization     = "28000"
	stateProtocolViolation        = "08P01"
	stateConnectionFailure        = "08006"
	stateCannotConnect            = "08001"
	stateInvalidCatalog           = "3D000"
	stateTooManyConnections       = "53300"
	stateAdminShutdown            = "57P01"
	stateQueryCanceled            = "57014"
	stateProgramLimitExceeded     = "54000"
	stateInvalidCursorName        = "34000"
	stateInvalidStatementName     = "26000"
	stateCharacterNotInRepertoire = "22021"
	stateSystemError              = "58000"
	stateInvalidParameter         = "22023"
	stateFeatureNotSupported      = "0A000"
)

func fatal(code, msg, hint string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg, Hint: hint}
}

// denial is the ErrorResponse a client sees for a denied statement.
func denial(d *policyv1.Decision, session string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{
		Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: stateInsufficientPrivilege,
		Message: fmt.Sprintf("sluice: statement denied by rule %q: %s", d.GetRule(), d.GetReason()),
		Detail:  fmt.Sprintf("policy revision %d; session %s", d.GetRevision(), session),
		Hint:    "The statement did not reach the database. Ask an administrator if you need it.",
	}
}
