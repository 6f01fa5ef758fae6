package masking

// matchSSN matches a US social security number starting at v[i] (a digit at
// a number start): AAA-GG-SSSS, or nine bare digits when bare is set. Areas
// 000, 666 and 900-999, group 00 and serial 0000 are never issued and are
// not matched.
func matchSSN(v []byte, i int, bare bool) (int, bool) {
	var d [9]byte
	n, j := 0, i
	switch {
	case len(v)-i >= 11 && v[i+3] == '-' && v[i+6] == '-':
		for k := 0; k < 11; k++ {
			if k == 3 || k == 6 {
				continue
			}
			if !isDigit(v[i+k]) {
				return 0, false
			}
			d[n] = v[i+k] - '0'
			n++
		}
		j = i + 11
	case bare && len(v)-i >= 9:
		for k := 0; k < 9; k++ {
			if !isDigit(v[i+k]) {
				return 0, false
			}
			d[k] = v[i+k] - '0'
		}
		j = i + 9
	default:
		return 0, false
	}
	if !digitEnd(v, j) {
		return 0, false
	}
	area := int(d[0])*100 + int(d[1])*10 + int(d[2])
	if area == 0 || area == 666 || area >= 900 {
		return 0, false
	}
	if d[3] == 0 && d[4] == 0 {
		return 0, false
	}
	if d[5] == 0 && d[6] == 0 && d[7] == 0 && d[8] == 0 {
		return 0, false
	}
	return j, true
}
