# The one list of what Sluice's build, tests and benchmarks need from the
# system, sourced by scripts/install-deps.sh (which installs what is missing)
# and scripts/preflight.sh (which names what is missing before `make test`).
# Every Debian package is named explicitly: nothing relies on a package that
# another one merely recommends.
#
# Each entry: how to find it | Debian packages | needed by | what for
#   cmd:NAME     a command on PATH (or in /usr/sbin)
#   glob:PATTERN a file matching the pattern
#   node:MODULE  an npm module installed under e2e/node
# "needed by" is "test" (make test, and so CI) or "bench" (make bench).
REQUIREMENTS=(
  "cmd:go||test|the Go toolchain, 1.26 or newer (https://go.dev/dl)"
  "cmd:gcc|gcc libc6-dev|test|cgo, for the PostgreSQL parser (pg_query_go)"
  "cmd:make|make|test|the Makefile"
  "cmd:git|git|test|gofmt and the checks list the tracked files"
  "glob:/usr/lib/postgresql/*/bin/initdb|postgresql|test|PostgreSQL server binaries: the demo database and the end-to-end targets"
  "cmd:psql|postgresql-client|test|psql, the real client the end-to-end tests drive"
  "cmd:pgbench|postgresql postgresql-client|test|pgbench, driven by the end-to-end tests and make bench"
  "cmd:node|nodejs|test|Node.js, for the node-postgres end-to-end test"
  "cmd:npm|npm|test|npm, to install node-postgres for that test"
  "node:pg||test|node-postgres, for the node-postgres end-to-end test"
  "node:@modelcontextprotocol/sdk||test|the MCP TypeScript SDK, for the MCP end-to-end test"
  "cmd:kubectl||test|kubectl 1.30 or newer (websocket exec), the real client the Kubernetes end-to-end tests drive (https://kubernetes.io/docs/tasks/tools/)"
  "cmd:sshd|openssh-server|test|OpenSSH's server: the demo and end-to-end SSH targets"
  "cmd:ssh|openssh-client|test|ssh, scp and sftp, the real clients the SSH end-to-end tests drive"
  "cmd:sftp|openssh-client openssh-sftp-server|test|sftp (and scp, which speaks sftp), driven by the SSH end-to-end tests"
  "cmd:chromium|chromium fonts-dejavu-core|test|Chromium, the real browser the web console's end-to-end tests drive (headless, through chromedp)"
  "cmd:pgbouncer|pgbouncer|bench|the baseline of make bench"
)

# have ENTRY-CHECK: whether the requirement is met.
have() {
  local check="$1"
  case "$check" in
    cmd:*)
      command -v "${check#cmd:}" >/dev/null 2>&1 || [ -x "/usr/sbin/${check#cmd:}" ] ;;
    glob:*)
      compgen -G "${check#glob:}" >/dev/null 2>&1 ;;
    node:*)
      [ -d "e2e/node/node_modules/${check#node:}" ] ;;
    *)
      echo "requirements.sh: unknown check $check" >&2; return 1 ;;
  esac
}
