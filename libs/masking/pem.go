package masking

import "bytes"

// matchPEM matches a private key block at v[i] == '-': the line
// "-----BEGIN <label>-----" whose label contains "PRIVATE KEY" (PKCS#8,
// RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP ... BLOCK), through the
// "-----END <label>-----" line with the same label.
//
// The body may hold base64, spaces, raw CR/LF, the escapes \n \r \\ \/ of
// JSON and COPY text, and RFC 1421 header lines ("Proc-Type: 4,ENCRYPTED").
// A body byte outside that alphabet (a quote, a tab, another "-----" line)
// ends the match there, as does the end of v: an unterminated block is
// masked up to that point minus trailing raw whitespace. So the match never
// swallows a JSON string end, a COPY field or row delimiter, or a CSV quote.
func matchPEM(v []byte, i int) (int, bool) {
	const begin, end = "-----BEGIN ", "-----END "
	if !hasPrefix(v, i, begin) {
		return 0, false
	}
	ls := i + len(begin)
	le := ls
	for le < len(v) && le-ls <= 64 && (isUpper(v[le]) || isDigit(v[le]) || v[le] == ' ') {
		le++
	}
	label := v[ls:le]
	if !hasPrefix(v, le, "-----") || !containsPrivateKey(label) {
		return 0, false
	}
	j := le + 5
	lineStart, header := true, false
	for j < len(v) {
		if lineStart {
			header = pemHeaderLine(v, j)
			lineStart = false
		}
		c := v[j]
		switch {
		case c == '\n':
			lineStart = true
			j++
		case c == '\r' || c == ' ' || c == '=' || class[c]&cB64 != 0:
			j++
		case c == '\\':
			if j+1 < len(v) {
				switch v[j+1] {
				case 'n':
					lineStart = true
					j += 2
					continue
				case 'r', '\\', '/':
					j += 2
					continue
				}
			}
			return pemTrim(v, j), true
		case c == '-' && hasPrefix(v, j, end):
			k := j + len(end)
			if bytes.HasPrefix(v[k:], label) && hasPrefix(v, k+len(label), "-----") {
				return k + len(label) + 5, true
			}
			return pemTrim(v, j), true
		case header && c >= 0x20 && c < 0x7f && c != '"' && c != '\'':
			j++
		default:
			return pemTrim(v, j), true
		}
	}
	return pemTrim(v, j), true
}

func containsPrivateKey(label []byte) bool {
	const want = "PRIVATE KEY"
	for k := 0; k+len(want) <= len(label); k++ {
		if string(label[k:k+len(want)]) == want {
			return true
		}
	}
	return false
}

// pemHeaderLine reports whether the line at v[j] is "Name: value".
func pemHeaderLine(v []byte, j int) bool {
	k := j
	for k < len(v) && k-j < 32 && (isUpper(v[k]) || isLower(v[k]) || v[k] == '-') {
		k++
	}
	return k > j && k < len(v) && v[k] == ':'
}

// pemTrim drops trailing raw whitespace so a row terminator stays outside.
func pemTrim(v []byte, j int) int {
	for j > 0 && (v[j-1] == '\n' || v[j-1] == '\r' || v[j-1] == ' ') {
		j--
	}
	return j
}
