package masking

// matchJWT matches a compact JWS (three base64url segments, the last one
// possibly empty as in alg "none") or JWE (five segments) at v[i] == 'e'.
// The first segment must decode to a JSON object that starts with '{' and a
// quoted key (optionally after whitespace) and contains the key "alg".
// Like the vendor tokens, a JWT never starts right after '-' or '_'.
func matchJWT(v []byte, i int) (int, bool) {
	if i+1 >= len(v) || (v[i+1] != 'y' && v[i+1] != 'w') {
		return 0, false
	}
	var ends [5]int
	h, _ := runEnd(v, i, cB64url, len(v))
	if h-i < 12 {
		return 0, false
	}
	ends[0] = h
	n := 1
	for j := h; n < 5 && j < len(v) && v[j] == '.'; n++ {
		j, _ = runEnd(v, j+1, cB64url, len(v))
		ends[n] = j
	}
	var end int
	switch {
	case n == 5:
		end = ends[4]
	case n >= 3 && ends[1] > h+1:
		end = ends[2]
	default:
		return 0, false
	}
	if !jwtHeader(v[i:h]) {
		return 0, false
	}
	return end, true
}

// jwtHeader decodes base64url seg on the fly (no allocation) and checks that
// it is a JSON object starting with a quoted key and containing "alg".
func jwtHeader(seg []byte) bool {
	if len(seg)%4 == 1 {
		return false
	}
	const want = `"alg"`
	var (
		acc   uint32
		bits  uint
		state = 0 // 0: expect '{', 1: expect '"', 2: body
		match = 0
	)
	for _, c := range seg {
		acc = acc<<6 | uint32(b64val(c))
		bits += 6
		if bits < 8 {
			continue
		}
		bits -= 8
		b := byte(acc >> bits)
		acc &= 1<<bits - 1
		switch state {
		case 0:
			if b != '{' {
				return false
			}
			state = 1
			continue
		case 1:
			if b == ' ' || b == '\t' || b == '\n' || b == '\r' {
				continue
			}
			if b != '"' {
				return false
			}
			state = 2
		}
		if b == want[match] {
			match++
			if match == len(want) {
				return true
			}
		} else if b == '"' {
			match = 1
		} else {
			match = 0
		}
	}
	return false
}

func b64val(c byte) byte {
	switch {
	case isUpper(c):
		return c - 'A'
	case isLower(c):
		return c - 'a' + 26
	case isDigit(c):
		return c - '0' + 52
	case c == '-':
		return 62
	}
	return 63 // '_'
}
