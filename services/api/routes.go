package api

// extraRoutes registers the routes of the control, policy, approvals and
// recorder APIs.
func (s *Server) extraRoutes() {
	s.controlRoutes()
	s.policyRoutes()
	s.auditRoutes()
	s.approvalRoutes()
	s.sshRoutes()
	s.kubernetesRoutes()
	s.renewRoutes()
	s.consoleRoutes()
}
