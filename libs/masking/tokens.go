package masking

// Vendor credentials recognised by their fixed prefixes. Every match needs a
// word start before it that is not '-' or '_' (so a prefix inside a longer
// token run never anchors, which also keeps scans linear), and a byte that
// cannot continue the token after it.
// Body scans are capped (maxTokenBody) so a long run of token-like bytes
// costs at most the cap per anchor.

const maxTokenBody = 400

// isTokenByte reports [A-Za-z0-9_-], the body alphabet of most API keys.
func isTokenByte(c byte) bool { return class[c]&cB64url != 0 }

// matchAWSKeyID matches an access key id: AKIA or ASIA and 16 [A-Z0-9].
func matchAWSKeyID(v []byte, i int) (int, bool) {
	if !hasPrefix(v, i, "AKIA") && !hasPrefix(v, i, "ASIA") {
		return 0, false
	}
	j := i + 4
	if len(v)-j < 16 {
		return 0, false
	}
	for k := j; k < j+16; k++ {
		if !isUpper(v[k]) && !isDigit(v[k]) {
			return 0, false
		}
	}
	j += 16
	if j < len(v) && isTokenByte(v[j]) {
		return 0, false
	}
	return j, true
}

// awsSecretNames introduce a secret access key ("aws_secret_access_key = ...",
// `"SecretAccessKey": "..."`); compared ignoring case.
var awsSecretNames = [...]string{"aws_secret_access_key", "secretaccesskey", "aws_secret_key"}

// matchAWSSecret matches the 40-byte secret access key after one of
// awsSecretNames at v[i] and up to 8 bytes of quotes, spaces, ':' or '='.
// The match covers the secret only.
func matchAWSSecret(v []byte, i int) (int, int, bool) {
	if i+1 >= len(v) || v[i+1]|0x20 != 'w' && v[i+1]|0x20 != 'e' {
		return 0, 0, false
	}
	j := -1
	for _, name := range awsSecretNames {
		if hasPrefixFold(v, i, name) {
			j = i + len(name)
			break
		}
	}
	if j < 0 {
		return 0, 0, false
	}
	for k := 0; k < 8 && j < len(v); k++ {
		switch v[j] {
		case ' ', '\t', '"', '\'', ':', '=', '\\':
			j++
			continue
		}
		break
	}
	s := j
	if v[s-1] == '\\' && oddBackslashes(v, s-1) {
		return 0, 0, false // the secret would start inside an escape
	}
	for j < len(v) && j-s < 40 && class[v[j]]&cB64 != 0 {
		j++
	}
	if j-s != 40 || (j < len(v) && (class[v[j]]&cB64 != 0 || v[j] == '=')) {
		return 0, 0, false
	}
	return s, j, true
}

// matchGitHub matches gh[pousr]_ + 36..255 [A-Za-z0-9] and
// github_pat_ + 40..255 [A-Za-z0-9_] (82 today) at v[i] == 'g'.
func matchGitHub(v []byte, i int) (int, bool) {
	if hasPrefix(v, i, "github_pat_") {
		j := i + len("github_pat_")
		e, ok := tokenRun(v, j, true, 255)
		if !ok || e-j < 40 || (e < len(v) && v[e] == '-') {
			return 0, false
		}
		return e, true
	}
	if len(v)-i < 4 || v[i+1] != 'h' || v[i+3] != '_' {
		return 0, false
	}
	switch v[i+2] {
	case 'p', 'o', 'u', 's', 'r':
	default:
		return 0, false
	}
	j := i + 4
	e, ok := tokenRun(v, j, false, 255)
	if !ok || e-j < 36 || (e < len(v) && isTokenByte(v[e])) {
		return 0, false
	}
	return e, true
}

// tokenRun scans [A-Za-z0-9] (plus '_' when underscore) from j, at most max bytes.
func tokenRun(v []byte, j int, underscore bool, max int) (int, bool) {
	k := j
	for k < len(v) && (isAlnum(v[k]) || underscore && v[k] == '_') {
		if k-j == max {
			return k, false
		}
		k++
	}
	return k, true
}

// matchOpenAI matches "sk-" and a body of 32..400 [A-Za-z0-9_-] that mixes at
// least two of lowercase, uppercase and digits (legacy sk-..., sk-proj-...,
// sk-svcacct-..., sk-admin-...). Hyphenated words ("sk-learn-...") have one
// class only and never match.
func matchOpenAI(v []byte, i int) (int, bool) {
	if !hasPrefix(v, i, "sk-") {
		return 0, false
	}
	j := i + 3
	e, ok := runEnd(v, j, cB64url, maxTokenBody)
	if !ok || e-j < 32 {
		return 0, false
	}
	if mixedClasses(v[j:e]) < 2 {
		return 0, false
	}
	return e, true
}

func mixedClasses(b []byte) int {
	var seen uint8
	for _, c := range b {
		seen |= class[c] & cAlnum
	}
	n := 0
	for ; seen != 0; seen &= seen - 1 {
		n++
	}
	return n
}

// matchSlack matches xox[abeprs]- tokens, xoxe.xoxp- rotating tokens and
// xapp- app tokens (body of 10..400 [A-Za-z0-9-] holding a digit) at
// v[i] == 'x', and incoming webhook URLs hooks.slack.com/services/... at
// v[i] == 'h'.
func matchSlack(v []byte, i int) (int, bool) {
	if v[i] == 'h' {
		const p = "hooks.slack.com/services/"
		if !hasPrefix(v, i, p) {
			return 0, false
		}
		j := i + len(p)
		k := j
		for k < len(v) && k-j < maxTokenBody && (isAlnum(v[k]) || v[k] == '/' || v[k] == '_' || v[k] == '-') {
			k++
		}
		if k-j < 10 {
			return 0, false
		}
		return k, true
	}
	var j int
	switch {
	case hasPrefix(v, i, "xoxe.xoxp-"):
		j = i + 10
	case hasPrefix(v, i, "xapp-"):
		j = i + 5
	case hasPrefix(v, i, "xox") && len(v)-i > 4 && v[i+4] == '-':
		switch v[i+3] {
		case 'a', 'b', 'e', 'p', 'r', 's':
		default:
			return 0, false
		}
		j = i + 5
	default:
		return 0, false
	}
	e := j
	digit := false
	for e < len(v) && (isAlnum(v[e]) || v[e] == '-') {
		if e-j == maxTokenBody {
			return 0, false
		}
		digit = digit || isDigit(v[e])
		e++
	}
	if e-j < 10 || !digit || (e < len(v) && v[e] == '_') {
		return 0, false
	}
	return e, true
}
