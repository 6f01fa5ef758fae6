package masking

import "bytes"

const (
	maxLocal  = 64  // RFC 5321 local-part limit
	maxDomain = 253 // RFC 1035 name limit
	maxLabel  = 63
)

// matchEmail matches local@domain.tld around the '@' at v[at]. The local
// part is the practical set [A-Za-z0-9._%+-] (no quoted forms), 1..64 bytes,
// no leading, trailing or doubled dot. The domain needs two or more labels
// and an alphabetic (or xn--) top-level label; trailing dots and labels that
// are not a valid TLD are left outside the match ("a@b.com." ends at "com").
func matchEmail(v []byte, at int) (start, end int, ok bool) {
	s := at
	for s > 0 && class[v[s-1]]&cLocal != 0 {
		s--
		if at-s > maxLocal {
			return 0, 0, false
		}
	}
	// A local part right after a backslash starts inside an escape (\n, \u00e9):
	// the escape stays in the text so the replacement never splits it.
	if s > 0 && v[s-1] == '\\' && oddBackslashes(v, s-1) {
		s += escapeLen(v, s)
	}
	for s < at && v[s] == '.' {
		s++
	}
	if s >= at || v[at-1] == '.' {
		return 0, 0, false
	}
	for k := s + 1; k < at; k++ {
		if v[k] == '.' && v[k-1] == '.' {
			return 0, 0, false
		}
	}
	e, ok := emailDomain(v, at+1)
	if !ok {
		return 0, 0, false
	}
	return s, e, true
}

func emailDomain(v []byte, j int) (int, bool) {
	e, ok := runEnd(v, j, cDomain, maxDomain)
	if !ok {
		return 0, false
	}
	for {
		for e > j && (v[e-1] == '.' || v[e-1] == '-') {
			e--
		}
		d := bytes.LastIndexByte(v[j:e], '.')
		if d < 0 {
			return 0, false // one label: a@b, user@localhost
		}
		if validTLD(v[j+d+1 : e]) {
			break
		}
		e = j + d
	}
	ls := j
	for k := j; k <= e; k++ {
		if k < e && v[k] != '.' {
			continue
		}
		if n := k - ls; n == 0 || n > maxLabel || v[ls] == '-' || v[k-1] == '-' {
			return 0, false
		}
		ls = k + 1
	}
	return e, true
}

func validTLD(t []byte) bool {
	if len(t) < 2 || len(t) > maxLabel {
		return false
	}
	if len(t) > 4 && string(t[:4]) == "xn--" {
		for _, c := range t[4:] {
			if !isAlnum(c) && c != '-' {
				return false
			}
		}
		return true
	}
	for _, c := range t {
		if !isUpper(c) && !isLower(c) {
			return false
		}
	}
	return true
}
