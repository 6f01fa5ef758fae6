package masking

// ibanLen holds the IBAN length per country (SEPA, GB and other common
// IBAN countries), indexed by the two uppercase letters of the country code.
var ibanLen = func() (t [26 * 26]uint8) {
	for cc, n := range map[string]uint8{
		"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
		"BH": 22, "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
		"DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22,
		"GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
		"IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
		"LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MT": 31,
		"MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
		"RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24,
		"TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
	} {
		t[int(cc[0]-'A')*26+int(cc[1]-'A')] = n
	}
	return t
}()

// matchIBAN matches an IBAN at v[i] (an uppercase letter at a word start):
// country code, two check digits (02-98) and the BBAN in uppercase letters
// and digits, either contiguous or printed in groups of four separated by
// single spaces. The length must match the country and the ISO 7064 mod-97
// check must hold.
func matchIBAN(v []byte, i int) (int, bool) {
	if len(v)-i < 15 || !isUpper(v[i+1]) || !isDigit(v[i+2]) || !isDigit(v[i+3]) {
		return 0, false
	}
	n := int(ibanLen[int(v[i]-'A')*26+int(v[i+1]-'A')])
	if n == 0 {
		return 0, false
	}
	if ck := (v[i+2]-'0')*10 + v[i+3] - '0'; ck < 2 || ck > 98 {
		return 0, false
	}
	spaced := v[i+4] == ' '
	j, got := i+4, 4
	for got < n {
		if spaced && got%4 == 0 {
			if j >= len(v) || v[j] != ' ' {
				return 0, false
			}
			j++
		}
		if j >= len(v) || !(isUpper(v[j]) || isDigit(v[j])) {
			return 0, false
		}
		j++
		got++
	}
	if !wordEnd(v, j) {
		return 0, false
	}
	// mod 97 over BBAN + country + check digits, letters as 10..35.
	r := 0
	add := func(c byte) {
		if isDigit(c) {
			r = (r*10 + int(c-'0')) % 97
		} else {
			r = (r*100 + int(c-'A') + 10) % 97
		}
	}
	for k := i + 4; k < j; k++ {
		if v[k] != ' ' {
			add(v[k])
		}
	}
	for k := i; k < i+4; k++ {
		add(v[k])
	}
	if r != 1 {
		return 0, false
	}
	return j, true
}
