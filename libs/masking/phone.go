package masking

// Phone numbers. Two grammars, both needing at least 10 digits:
//
//   - international, introduced by '+': a 1-3 digit country code, then digit
//     groups split by single spaces, dashes or dots, or parenthesised groups
//     ("+44 (0) 20 7946 0958"); 10-15 digits not counting a "(0)" trunk
//     prefix. "+14155552671" (E.164, no separators) is one group.
//   - NANP without '+': "(415) 555-2671", "415-555-2671", "415.555.2671",
//     "415 555 2671", optionally after "1-", "1 " or "1.". Area code and
//     exchange start with 2-9; the two separators agree.
//
// Bare digit runs ("4155552671") are not phones: they are indistinguishable
// from ids and timestamps. Numbers continued by a dash, dot or slash and a
// digit (dates, versions, longer ids) never match.

const (
	maxPhoneGroups = 8
	maxPhoneGroup  = 10
)

func isPhoneSep(c byte) bool { return c == ' ' || c == '-' || c == '.' }

// matchNANP matches a North American number at v[i], a digit or '('.
func matchNANP(v []byte, i int) (int, bool) {
	j := i
	if v[j] == '1' && j+2 < len(v) && isPhoneSep(v[j+1]) && (isDigit(v[j+2]) || v[j+2] == '(') {
		j += 2
	}
	paren := false
	var sep byte
	if v[j] == '(' {
		if !nanpTriple(v, j+1) || j+4 >= len(v) || v[j+4] != ')' {
			return 0, false
		}
		j += 5
		if j < len(v) && v[j] == ' ' {
			j++
		}
		paren = true
	} else {
		if !nanpTriple(v, j) || j+3 >= len(v) || !isPhoneSep(v[j+3]) {
			return 0, false
		}
		sep = v[j+3]
		j += 4
	}
	if !nanpTriple(v, j) || j+3 >= len(v) {
		return 0, false
	}
	j += 3
	if paren && !isPhoneSep(v[j]) || !paren && v[j] != sep {
		return 0, false
	}
	j++
	if len(v)-j < 4 || !isDigit(v[j]) || !isDigit(v[j+1]) || !isDigit(v[j+2]) || !isDigit(v[j+3]) {
		return 0, false
	}
	j += 4
	if !digitEnd(v, j) {
		return 0, false
	}
	return j, true
}

// nanpTriple reports whether v[j:j+3] is [2-9]dd.
func nanpTriple(v []byte, j int) bool {
	return len(v)-j >= 3 && v[j] >= '2' && v[j] <= '9' && isDigit(v[j+1]) && isDigit(v[j+2])
}

type phoneGroup struct {
	end    int // index after the group (after ')' for a parenthesised one)
	digits int
	trunk  bool // "(0)"
	paren  bool
}

// matchIntl matches an international number at v[i] == '+'.
func matchIntl(v []byte, i int) (int, bool) {
	var g [maxPhoneGroups]phoneGroup
	ng := 0
	more := false
	j := i + 1
	if j >= len(v) || !isDigit(v[j]) {
		return 0, false
	}
	for {
		var pg phoneGroup
		if v[j] == '(' {
			k := j + 1
			for k < len(v) && isDigit(v[k]) && k-j <= 4 {
				k++
			}
			if k == j+1 || k >= len(v) || v[k] != ')' {
				more = true
				break
			}
			pg = phoneGroup{end: k + 1, digits: k - j - 1, paren: true}
			pg.trunk = pg.digits == 1 && v[j+1] == '0'
		} else {
			k := j
			for k < len(v) && isDigit(v[k]) {
				k++
			}
			if k-j > 15 {
				return 0, false
			}
			pg = phoneGroup{end: k, digits: k - j}
		}
		g[ng] = pg
		ng++
		j = pg.end
		if j >= len(v) {
			break
		}
		next := j
		if isPhoneSep(v[j]) {
			next = j + 1
		}
		if next >= len(v) || !(isDigit(v[next]) || v[next] == '(') || (next == j && !pg.paren && v[next] != '(') {
			break
		}
		if ng == maxPhoneGroups {
			more = true
			break
		}
		j = next
	}
	// Longest acceptable prefix of the groups.
	for k := ng; k >= 1; k-- {
		end := g[k-1].end
		if k == ng && !more {
			if !digitEnd(v, end) {
				continue
			}
		} else if v[end] != ' ' {
			continue
		}
		if intlGroupsOK(g[:k]) {
			return end, true
		}
	}
	return 0, false
}

func intlGroupsOK(g []phoneGroup) bool {
	if len(g) == 1 {
		return !g[0].paren && g[0].digits >= 10 && g[0].digits <= 15
	}
	if g[0].paren || g[0].digits > 3 {
		return false
	}
	total, ones := g[0].digits, 0
	for _, x := range g[1:] {
		if x.trunk {
			continue
		}
		if x.digits > maxPhoneGroup {
			return false
		}
		if x.digits == 1 {
			ones++
		}
		total += x.digits
	}
	return ones <= 1 && total >= 10 && total <= 15
}
